/* log.c: one key=value line per event on stderr, OpenBSD log.h style. */
#include "server.h"

#include <stdarg.h>
#include <string.h>
#include <time.h>

static const char *const level_names[] = { "debug", "info", "warn", "error" };

int srv_log_level_parse(const char *name)
{
	for (int i = 0; i < (int)(sizeof(level_names) / sizeof(level_names[0])); i++)
		if (strcmp(name, level_names[i]) == 0)
			return i;
	return -1;
}

void srv_log_at(const srv_log *lg, int level, const char *msg, const char *fmt, ...)
{
	if (!lg || level < lg->level)
		return;
	char ts[32];
	struct timespec now;
	struct tm tmv;
	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tmv);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tmv);
	char line[2048];
	int n = snprintf(line, sizeof(line), "ts=%s level=%s msg=\"%s\"", ts, level_names[level], msg);
	if (fmt && *fmt && n > 0 && (size_t)n < sizeof(line) - 1) {
		line[n++] = ' ';
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
		va_end(ap);
	}
	fprintf(lg->out ? lg->out : stderr, "%s\n", line);
	fflush(lg->out ? lg->out : stderr);
}
