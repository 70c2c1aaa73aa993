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
/// - GOMP_SPINCOUNT = 1000, unless OMP_WAIT_POLICY is set: idle threads spin briefly, then sleep.
///   Measured on this 2-core machine, 2-thread LeNet training (img/s, quiet / one core busy):
///   default spinning 39.5k / 13-17k (and about 900 at load 6), PASSIVE 22k / 21k,
///   GOMP_SPINCOUNT=1000 34k / 18k. Set OMP_WAIT_POLICY=ACTIVE yourself on a dedicated machine.
/// It also tells malloc to keep large freed blocks, so each training step's tensors reuse memory
/// instead of page-faulting it in anew. If the re-exec fails the program runs on as it is.
void setup_process(int argc, char** argv);

/// The kernel OpenBLAS chose, from openblas_get_corename().
std::string blas_core_name();

/// Sets the number of OpenMP threads our kernels use, and keeps OpenBLAS single-threaded.
void set_num_threads(int threads);
int num_threads();

/// One line for the start of a program's output: BLAS core and thread counts.
std::string runtime_banner();

}  // namespace xgrad
