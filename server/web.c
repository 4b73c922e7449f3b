/* web.c: placeholder while the module is written. */
#include "server.h"
