// Process set-up for programs that train or benchmark: the BLAS kernel and thread counts.
#pragma once

#include <string>

namespace xgrad {

/// The OPENBLAS_CORETYPE this CPU should use: "SkylakeX" with AVX-512, "Haswell" with AVX2,
/// else "" (let OpenBLAS decide).
std::string preferred_blas_core();

/// Sets up a program that trains or benchmarks; call it first thing in main().
/// OpenBLAS and libgomp read their settings from the environment when they load, before main(),
/// so for each of these that is unset this sets it and then re-executes the program once:
/// - OPENBLAS_CORETYPE = preferred_blas_core() (Debian's OpenBLAS falls back to slow SSE3 kernels
///   on CPUs it does not recognise: sgemm was 5x slower here);
/// - OPENBLAS_NUM_THREADS = 1 (our OpenMP threads parallelise over the batch; two pools fight);
/// - GOMP_SPINCOUNT, unless OMP_WAIT_POLICY is set: idle threads spin for a while, then sleep.
///   40000 when the machine is quiet at start (busy_cores() < 0.5), else 1000.
///   Measured on this 2-core machine, 2-thread LeNet training (img/s): quiet, spin 1000 / 4000 /
///   active gave 34k / 40k / 40k at batch 64 and 22k / 34k / 34k at batch 32 (AVX-512 Xeon,
///   kernel threading). Sharded (parallel.hpp), a step leaves the worker idle while the calling
///   thread sums the shards' gradients; on the AVX2 EPYC, spin 4000 / 40000 / 400000 gave medians
///   of 23.4k / 25.6k / 25.5k img/s (6 alternating runs each), and LeNet inference 86k / 99k
///   (spin 4000 / 40000). With one other busy process, spin 1000 / 4000 / passive gave 18k /
///   12.4k / 21k at batch 64, and libgomp's default (near-endless spinning) about 900 at load 6.
///   Set OMP_WAIT_POLICY=ACTIVE yourself on a dedicated machine.
/// With OMP_PROC_BIND or OMP_PLACES set, libgomp has bound this thread to the first place before
/// main(); the re-executed program gets the CPUs of all the places back, or it would run every
/// OpenMP thread on that one (2-thread training 2.2x slower on a 2-vCPU EPYC).
/// It also tells malloc to keep large freed blocks, so each training step's tensors reuse memory
/// instead of page-faulting it in anew, and calls enable_flush_to_zero(). If the re-exec fails
/// the program runs on as it is.
void setup_process(int argc, char** argv);

/// Flushes denormal floats to zero (x86 MXCSR FTZ and DAZ) in this thread and in the threads it
/// starts later, such as the OpenMP pool. Once a model fits its batch, gradients shrink into the
/// denormal range, where every multiply takes a microcode assist: LeNet training on one repeated
/// batch of 8 spent half its time in the SGD step and ReLU backward. Values below 1.2e-38
/// (float) become 0, as in TensorFlow's default and PyTorch's torch.set_flush_denormal(True).
void enable_flush_to_zero();
bool flush_to_zero_enabled();

/// How many cores other processes keep busy: the machine's non-idle CPU time over the next 200 ms
/// (from /proc/stat) less this process's own, per second; 0 where /proc/stat is missing.
double busy_cores();

/// The kernel OpenBLAS chose, from openblas_get_corename().
std::string blas_core_name();

/// Sets the number of OpenMP threads our kernels use, and keeps OpenBLAS single-threaded.
void set_num_threads(int threads);
/// The number of threads a parallel region started here gets: set_num_threads' count, but 1 in a
/// sharded region (a shard of sharded_backward or sharded_forward, on whichever thread) and inside
/// a region whose nested regions run single-threaded. Kernels size their per-thread work and
/// buffers by it.
int num_threads();

/// One line for the start of a program's output: BLAS core, thread counts and the CPUs OpenMP may
/// use (omp_get_num_procs()). Where the environment sets an OPENBLAS_CORETYPE other than
/// preferred_blas_core(), it says so.
std::string runtime_banner();

}  // namespace xgrad
