/* event.c: the three events of TinyMLPerf as one table.  The validator, the worker, the API's
 * /events and the event pages all read these rows, so a rule is stated once. */
#include "events.h"

#include <string.h>

static const ev_event events[EV_COUNT] = {
	[EV_MLP_SPRINT] = {
		.id = EV_MLP_SPRINT,
		.name = "mlp_sprint",
		.title = "MLP Sprint",
		.dataset = "Fashion-MNIST (Debian dataset-fashion-mnist): 60,000 training and "
			   "10,000 test images, 28x28 grey levels, 10 classes",
		.reference = "MLP 784 -> 128 -> ReLU -> 64 -> ReLU -> 10",
		.scenario = EV_SCENARIO_SINGLE_STREAM,
		.scenario_text = "single-stream: one test image per query, in a seeded order",
		.primary_metric = "p90 latency per query (early-stopping estimate)",
		.quality_metric = "top-1 accuracy on the 10,000 test images",
		.closed_gate = 0.99,
		.open_gate = 0.95,
	},
	[EV_CNN_MARATHON] = {
		.id = EV_CNN_MARATHON,
		.name = "cnn_marathon",
		.title = "CNN Marathon",
		.dataset = "Fashion-MNIST (Debian dataset-fashion-mnist): 60,000 training and "
			   "10,000 test images, 28x28 grey levels, 10 classes",
		.reference = "conv3x3 1->32, ReLU, maxpool 2; conv3x3 32->64, ReLU, maxpool 2; "
			     "linear 1600->10",
		.scenario = EV_SCENARIO_OFFLINE,
		.scenario_text = "offline: the whole 10,000-image test set per pass, in batches of "
				 "the config's batch_size",
		.primary_metric = "images per second",
		.quality_metric = "top-1 accuracy on the 10,000 test images",
		.closed_gate = 0.99,
		.open_gate = 0.95,
	},
	[EV_TRANSFORMER_DECATHLON] = {
		.id = EV_TRANSFORMER_DECATHLON,
		.name = "transformer_decathlon",
		.title = "Transformer Decathlon",
		.dataset = "ten generated sequence tasks (copy, reverse, sort, ...), seeded training "
			   "and held-out test sets",
		.reference = "decoder-only transformer: context 128, d_model 128, 8 heads, 2 layers, "
			     "FFN 512 (GELU), pre-LayerNorm, learned positions",
		.scenario = EV_SCENARIO_GENERATION,
		.scenario_text = "generation: greedy decoding of every held-out prompt of the ten tasks",
		.primary_metric = "tokens per second of decoding; p90 latency per token",
		.quality_metric = "decathlon points: 100 x exact-match accuracy per task, summed "
				  "(max 1000)",
		.closed_gate = 0.99,
		.open_gate = 0.90,
	},
};

const ev_event *ev_event_at(int i)
{
	return i >= 0 && i < EV_COUNT ? &events[i] : NULL;
}

const ev_event *ev_event_find(const char *name)
{
	for (int i = 0; i < EV_COUNT; i++)
		if (strcmp(events[i].name, name) == 0)
			return &events[i];
	return NULL;
}

const char *ev_event_names(void)
{
	return "mlp_sprint, cnn_marathon, transformer_decathlon";
}
