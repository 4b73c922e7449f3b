/* gemm_avx2.c: placeholder until its module lands in this session. */
