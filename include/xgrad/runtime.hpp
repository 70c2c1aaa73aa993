// Process set-up for programs that train or benchmark: the BLAS kernel and thread counts.
#pragma once

#include <string>

namespace xgrad {

/// The OPENBLAS_CORETYPE this CPU should use: "SkylakeX" with AVX-512, "Haswell" with AVX2,
/// else "" (let OpenBLAS decide).
std::string preferred_blas_core();

/// OpenBLAS reads OPENBLAS_CORETYPE when it loads, before main(). If the variable is unset, this
/// sets it (and OPENBLAS_NUM_THREADS=1 unless set) and re-executes the program once, so the
/// fast kernels are used. Call it first thing in main(). Returns normally after the re-exec or
/// when nothing needs to change (or the re-exec failed: the program then runs on as it is).
/// It also tells malloc to keep large freed blocks, so each training step's tensors reuse memory
/// instead of page-faulting it in anew.
void ensure_fast_blas(int argc, char** argv);

/// The kernel OpenBLAS chose, from openblas_get_corename().
std::string blas_core_name();

/// Sets the number of OpenMP threads our kernels use, and keeps OpenBLAS single-threaded.
void set_num_threads(int threads);
int num_threads();

/// One line for the start of a program's output: BLAS core and thread counts.
std::string runtime_banner();

}  // namespace xgrad
