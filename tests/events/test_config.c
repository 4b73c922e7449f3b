/* test_config.c: Check suite of events/config.c and events/event.c: valid configs of every
 * event and division parse to the right values; bad ones are rejected with the field's path,
 * the value and the range, several at once; resource limits are reported as such. */
#include "tests.h"
#include "events.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int parse(const char *json, cfg_config *c, cfg_errors *e)
{
	return cfg_parse(json, strlen(json), NULL, c, e);
}

START_TEST(test_event_table)
{
	ck_assert_ptr_eq(ev_event_find("mlp_sprint"), ev_event_at(EV_MLP_SPRINT));
	ck_assert_ptr_eq(ev_event_find("transformer_decathlon"), ev_event_at(EV_TRANSFORMER_DECATHLON));
	ck_assert_ptr_null(ev_event_find("MLP_SPRINT"));
	ck_assert_ptr_null(ev_event_at(EV_COUNT));
	for (int i = 0; i < EV_COUNT; i++) {
		const ev_event *e = ev_event_at(i);
		ck_assert_int_eq(e->id, i);
		ck_assert(e->closed_gate > e->open_gate && e->closed_gate <= 1.0);
		ck_assert_ptr_nonnull(strstr(ev_event_names(), e->name));
	}
}
END_TEST

START_TEST(test_valid_configs)
{
	cfg_config c;
	cfg_errors e;
	ck_assert_int_eq(parse("{\"event\":\"mlp_sprint\"}", &c, &e), 0);
	ck_assert_ptr_eq(c.event, ev_event_at(EV_MLP_SPRINT));
	ck_assert(!c.open && !c.quantize && !c.prune);
	ck_assert_int_eq(c.params, 109386); /* 784*128+128 + 128*64+64 + 64*10+10 */
	ck_assert_int_eq(c.flops, 218570);  /* the engine's count: 2*in*out + out per layer */
	ck_assert(c.given == 1); /* only 'event' (row 0) was given */
	ck_assert_int_eq(c.threads, 1);

	const char *design_example =
		"{ \"event\": \"mlp_sprint\", \"division\": \"open\", \"name\": \"int8 + 80% sparse\","
		"  \"model\": { \"hidden\": [128, 64] },"
		"  \"train\": { \"epochs\": 5, \"lr\": 0.01, \"batch\": 64, \"seed\": 1 },"
		"  \"optimize\": { \"kernels\": \"auto\", \"threads\": 1,"
		"    \"quantize\": { \"dtype\": \"int8\", \"granularity\": \"per_channel\", \"calibration_samples\": 512 },"
		"    \"prune\": { \"method\": \"magnitude\", \"sparsity\": 0.8, \"structured\": false, \"finetune_epochs\": 1 } } }";
	ck_assert_int_eq(parse(design_example, &c, &e), 0);
	ck_assert(c.open && c.quantize && c.prune && c.per_channel && !c.structured);
	ck_assert_str_eq(c.name, "int8 + 80% sparse");
	ck_assert_double_eq(c.sparsity, 0.8);
	ck_assert_int_eq(c.epochs, 5);
	ck_assert_double_eq(c.lr, 0.01);
	ck_assert_int_eq(c.finetune_epochs, 1);

	ck_assert_int_eq(parse("{\"event\":\"cnn_marathon\",\"batch_size\":64,"
			       "\"optimize\":{\"threads\":2,\"kernels\":\"portable\"}}", &c, &e), 0);
	ck_assert_int_eq(c.batch_size, 64);
	ck_assert_str_eq(c.kernels, "portable");
	ck_assert_int_eq(c.params, 34826); /* 32*9+32 + 64*32*9+64 + 1600*10+10 */

	ck_assert_int_eq(parse("{\"event\":\"transformer_decathlon\",\"optimize\":{\"kv_cache\":true,"
			       "\"quantize\":{\"calibration\":\"percentile\",\"percentile\":99.9}}}", &c, &e), 0);
	ck_assert(c.kv_cache && c.quantize);
	/* The reference transformer: the engine's exact count (425,984, as the transformer suite
	 * checks against the hand formula), not a re-derivation in the validator. */
	ck_assert_int_eq(c.params, 425984);
	ck_assert_int_eq(c.calibration, CFG_CALIB_PERCENTILE);
	ck_assert_double_eq(c.calibration_percentile, 99.9);
	/* Hostile text in the name is kept verbatim: escaping is the pages' job. */
	ck_assert_int_eq(parse("{\"event\":\"mlp_sprint\",\"name\":\"<img src=x onerror=alert(1)>\"}", &c, &e), 0);
	ck_assert_str_eq(c.name, "<img src=x onerror=alert(1)>");
}
END_TEST

static const struct bad_case {
	const char *json;
	const char *field;   /* the path the first error must name */
	const char *text;    /* and a piece of its message */
} bad[] = {
	{ "", "", "not valid JSON" },
	{ "{\"event\":", "", "not valid JSON" },
	{ "[1]", "", "must be a JSON object" },
	{ "{\"event\":\"mlp_sprint\"} x", "", "trailing data" },
	{ "{}", "event", "'event' is required" },
	{ "{\"event\":\"mnist\"}", "event", "must be one of mlp_sprint" },
	{ "{\"event\":7}", "event", "'event' is 7" },
	{ "{\"event\":\"mlp_sprint\",\"division\":\"premier\"}", "division", "must be one of closed, open" },
	{ "{\"event\":\"mlp_sprint\",\"colour\":1}", "colour", "not a config field" },
	{ "{\"event\":\"mlp_sprint\",\"optimize\":{\"turbo\":true}}", "optimize.turbo", "allowed in optimize" },
	{ "{\"event\":\"mlp_sprint\",\"optimize\":{\"threads\":0}}", "optimize.threads", "must be an integer in [1, 64]" },
	{ "{\"event\":\"mlp_sprint\",\"optimize\":{\"threads\":1.5}}", "optimize.threads", "is 1.5" },
	{ "{\"event\":\"mlp_sprint\",\"optimize\":{\"threads\":\"2\"}}", "optimize.threads", "is \"2\"" },
	{ "{\"event\":\"mlp_sprint\",\"optimize\":{\"kernels\":\"cuda\"}}", "optimize.kernels", "must be one of auto, portable" },
	{ "{\"event\":\"mlp_sprint\",\"optimize\":{\"prune\":{\"sparsity\":1.5}}}", "optimize.prune.sparsity", "is 1.5, must be a number in [0, 0.99]" },
	{ "{\"event\":\"mlp_sprint\",\"optimize\":{\"prune\":{\"sparsity\":-0.1}}}", "optimize.prune.sparsity", "[0, 0.99]" },
	{ "{\"event\":\"mlp_sprint\",\"optimize\":{\"prune\":{\"method\":\"random\"}}}", "optimize.prune.method", "must be one of magnitude" },
	{ "{\"event\":\"mlp_sprint\",\"optimize\":{\"prune\":{\"structured\":\"yes\"}}}", "optimize.prune.structured", "true or false" },
	{ "{\"event\":\"mlp_sprint\",\"optimize\":{\"prune\":{\"finetune_epochs\":9}}}", "optimize.prune.finetune_epochs", "[0, 3]" },
	{ "{\"event\":\"mlp_sprint\",\"optimize\":{\"prune\":true}}", "optimize.prune", "must be an object" },
	{ "{\"event\":\"mlp_sprint\",\"optimize\":{\"quantize\":{\"dtype\":\"int4\"}}}", "optimize.quantize.dtype", "must be one of int8" },
	{ "{\"event\":\"mlp_sprint\",\"optimize\":{\"quantize\":{\"calibration_samples\":0}}}", "optimize.quantize.calibration_samples", "[1, 10000]" },
	{ "{\"event\":\"mlp_sprint\",\"optimize\":{\"quantize\":{\"percentile\":99.5}}}", "optimize.quantize.percentile", "needs 'optimize.quantize.calibration'" },
	{ "{\"event\":\"mlp_sprint\",\"optimize\":{\"quantize\":{\"percentile\":99.99}}}", "optimize.quantize.percentile", "needs 'optimize.quantize.calibration'" },
	{ "{\"event\":\"mlp_sprint\",\"optimize\":{\"kv_cache\":true}}", "optimize.kv_cache", "applies only to transformer_decathlon" },
	{ "{\"event\":\"mlp_sprint\",\"batch_size\":32}", "batch_size", "applies only to cnn_marathon" },
	{ "{\"event\":\"cnn_marathon\",\"batch_size\":0}", "batch_size", "[1, 10000]" },
	{ "{\"event\":\"mlp_sprint\",\"model\":{\"hidden\":[64]}}", "model", "only allowed in the open division" },
	{ "{\"event\":\"mlp_sprint\",\"train\":{\"epochs\":3}}", "train", "only allowed in the open division" },
	{ "{\"event\":\"mlp_sprint\",\"division\":\"open\",\"model\":{\"hidden\":[]}}", "model.hidden", "list of 1 to 8 integers" },
	{ "{\"event\":\"mlp_sprint\",\"division\":\"open\",\"model\":{\"hidden\":[64,-3]}}", "model.hidden", "'model.hidden[1]' is -3" },
	{ "{\"event\":\"mlp_sprint\",\"division\":\"open\",\"model\":{\"c1\":8}}", "model.c1", "applies only to cnn_marathon" },
	{ "{\"event\":\"mlp_sprint\",\"division\":\"open\",\"train\":{\"lr\":0}}", "train.lr", "must be a number in" },
	{ "{\"event\":\"mlp_sprint\",\"division\":\"open\",\"train\":{\"optimizer\":\"lion\"}}", "train.optimizer", "sgd, adam, adamw" },
	{ "{\"event\":\"mlp_sprint\",\"division\":\"open\",\"train\":{\"seed\":1e300}}", "train.seed", "must be an integer" },
	{ "{\"event\":\"transformer_decathlon\",\"division\":\"open\",\"model\":{\"d_model\":100,\"heads\":8}}", "model.heads", "must divide" },
	{ "{\"event\":\"mlp_sprint\",\"optimize\":{\"prune\":{\"structured\":true,\"scope\":\"global\"}}}", "optimize.prune.scope", "use \"layer\"" },
	{ "{\"event\":\"mlp_sprint\",\"name\":\"a\\nb\"}", "name", "control character" },
	{ "{\"event\":\"mlp_sprint\",\"name\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}", "name", "at most 64 bytes" },
};

START_TEST(test_bad_configs_name_the_field)
{
	ck_assert_int_ge(sizeof(bad) / sizeof(bad[0]), 25);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cfg_config c;
		cfg_errors e;
		int rc = parse(bad[i].json, &c, &e);
		if (rc != TM_EINVAL || e.n < 1 || strcmp(e.e[0].field, bad[i].field) != 0 ||
		    !strstr(e.e[0].msg, bad[i].text))
			ck_abort_msg("case %zu %s: rc %d, %d errors, first field '%s' msg '%s'; want "
				     "field '%s' containing '%s'", i, bad[i].json, rc, e.n,
				     e.n ? e.e[0].field : "", e.n ? e.e[0].msg : "", bad[i].field,
				     bad[i].text);
	}
}
END_TEST

START_TEST(test_several_errors_at_once)
{
	cfg_config c;
	cfg_errors e;
	const char *json = "{\"event\":\"cnn_marathon\",\"optimize\":{\"threads\":-1,\"kernels\":\"x\","
			   "\"kv_cache\":true},\"batch_size\":0,\"bogus\":null}";
	ck_assert_int_eq(parse(json, &c, &e), TM_EINVAL);
	ck_assert_int_eq(e.n, 5);
	const char *want[] = { "optimize.threads", "optimize.kernels", "optimize.kv_cache",
			       "batch_size", "bogus" };
	for (int i = 0; i < 5; i++)
		ck_assert_str_eq(e.e[i].field, want[i]);
	/* Printing gives one line each. */
	char buf[4096];
	FILE *f = fmemopen(buf, sizeof(buf), "w");
	cfg_errors_print(&e, f);
	fclose(f);
	int lines = 0;
	for (char *p = buf; *p; p++)
		lines += *p == '\n';
	ck_assert_int_eq(lines, 5);
}
END_TEST

START_TEST(test_resource_limits)
{
	cfg_config c;
	cfg_errors e;
	/* 8 hidden layers of 4096: ~117M parameters, over the 10M default. */
	const char *huge = "{\"event\":\"mlp_sprint\",\"division\":\"open\",\"model\":{\"hidden\":"
			   "[4096,4096,4096,4096,4096,4096,4096,4096]}}";
	ck_assert_int_eq(parse(huge, &c, &e), TM_ELIMIT);
	ck_assert(e.over_limit);
	ck_assert_str_eq(e.e[0].field, "model");
	ck_assert_ptr_nonnull(strstr(e.e[0].msg, "parameters, the limit is 10000000"));
	/* Lowered limits from the daemon apply too. */
	cfg_limits lim;
	cfg_limits_default(&lim);
	lim.max_params = 50000;
	const char *ref = "{\"event\":\"mlp_sprint\"}";
	ck_assert_int_eq(cfg_parse(ref, strlen(ref), &lim, &c, &e), TM_ELIMIT);
	/* A training budget that the estimate exceeds. */
	const char *slow = "{\"event\":\"mlp_sprint\",\"division\":\"open\",\"model\":{\"hidden\":[2048,2048]},"
			   "\"train\":{\"epochs\":50}}";
	ck_assert_int_eq(parse(slow, &c, &e), TM_ELIMIT);
	ck_assert_str_eq(e.e[0].field, "train.epochs");
	ck_assert_ptr_nonnull(strstr(e.e[0].msg, "the budget is 10"));
	/* Oversized documents are refused before parsing. */
	size_t n = CFG_MAX_BYTES + 10;
	char *big = calloc(1, n + 1);
	memset(big, ' ', n);
	big[0] = '{';
	big[n - 1] = '}';
	ck_assert_int_eq(cfg_parse(big, n, NULL, &c, &e), TM_EINVAL);
	ck_assert_ptr_nonnull(strstr(e.e[0].msg, "the limit is"));
	free(big);
}
END_TEST

/* Run `tinymlperf-run validate FILE` for real; returns its exit status. */
static int run_validate(const char *json)
{
	char *dir = tt_tmpdir("validate");
	char path[600];
	snprintf(path, sizeof(path), "%s/c.json", dir);
	FILE *f = fopen(path, "w");
	fputs(json, f);
	fclose(f);
	char *bin = tt_build_path("tinymlperf-run");
	pid_t pid = fork();
	if (pid == 0) {
		freopen("/dev/null", "w", stdout);
		freopen("/dev/null", "w", stderr);
		execl(bin, bin, "validate", path, (char *)NULL);
		_exit(127);
	}
	int status = 0;
	waitpid(pid, &status, 0);
	free(bin);
	tt_rmtree(dir);
	free(dir);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

START_TEST(test_cli_validate_exit_codes)
{
	ck_assert_int_eq(run_validate("{\"event\":\"mlp_sprint\"}"), 0);
	ck_assert_int_eq(run_validate("{\"event\":\"mlp_sprint\",\"optimize\":{\"threads\":0}}"), 2);
	ck_assert_int_eq(run_validate("{\"event\":\"mlp_sprint\",\"division\":\"open\",\"model\":"
				      "{\"hidden\":[4096,4096,4096,4096,4096,4096,4096,4096]}}"), 3);
	ck_assert_int_eq(run_validate("not json"), 2);
}
END_TEST

Suite *config_suite(void)
{
	Suite *s = suite_create("config");
	TCase *tc = tcase_create("parse");
	tcase_add_test(tc, test_event_table);
	tcase_add_test(tc, test_valid_configs);
	tcase_add_test(tc, test_bad_configs_name_the_field);
	tcase_add_test(tc, test_several_errors_at_once);
	tcase_add_test(tc, test_resource_limits);
	tcase_add_test(tc, test_cli_validate_exit_codes);
	suite_add_tcase(s, tc);
	return s;
}
