/* web.c: placeholder while the pages are written (the table below is empty). */
#include "server.h"

const http_route web_routes[1] = { { "GET", "/", NULL } };
const size_t web_n_routes = 0;
