/* tf_infer.c: placeholder while the module is written (see engine.h, section tf_infer). */
#include "engine.h"
