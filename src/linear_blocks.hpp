// How linear cuts its GEMMs into row blocks for OpenBLAS's small-matrix sgemm (ops/linear.cpp).
#pragma once

namespace xgrad::detail {

/// Rows per BLAS call for linear's forward (y = x·wᵀ: trans_b, m rows, n = out, k = in) or
/// backward-data GEMM (dx = g·w: m rows, n = in, k = out), given whether OpenBLAS's core has the
/// small-matrix sgemm kernels; m means one call. See ops/linear.cpp for the rule and its figures.
int linear_block_rows(bool trans_b, int m, int n, int k, bool small_matrix_sgemm);

/// Whether linear cuts its float GEMMs as linear_block_rows says: by default where this
/// process's OpenBLAS core has the small-matrix kernels (SkylakeX, Cooperlake, SapphireRapids).
/// Tests force it on (1) or off (0) to check the blocks on any core; -1 goes back to the default.
void set_linear_small_matrix_blocks(int forced);

}  // namespace xgrad::detail
