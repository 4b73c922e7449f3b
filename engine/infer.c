/* infer.c: placeholder while the module is written (see engine.h, section infer). */
#include "engine.h"
