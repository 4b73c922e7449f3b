/* gemm_avx512.c: placeholder until its module lands in this session. */
