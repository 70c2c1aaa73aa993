// Raw-pointer BLAS calls, kept out of xtensor translation units (cblas.h clashes with
// xtensor-blas). Row-major throughout.
#pragma once

namespace xgrad::blas {

/// C = alpha·op(A)·op(B) + beta·C, row-major; op(X) = Xᵀ when trans_x. op(A) is m×k,
/// op(B) is k×n, C is m×n; lda, ldb, ldc are the row strides of A, B and C as stored.
void gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* a, int lda,
          const float* b, int ldb, float beta, float* c, int ldc);
void gemm(bool trans_a, bool trans_b, int m, int n, int k, double alpha, const double* a, int lda,
          const double* b, int ldb, double beta, double* c, int ldc);

}  // namespace xgrad::blas
