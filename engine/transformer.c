/* transformer.c: placeholder until its module lands in this session. */
