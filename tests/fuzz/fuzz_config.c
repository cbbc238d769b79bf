/* fuzz_config.c — libFuzzer target over the text a user writes by hand or a run store hands back:
 * the first byte picks the parser, the rest is its text (cut at the first NUL, as a C string):
 *   0 scheduler config JSON (--config; a recorded run's or recommendation's config)
 *   1 hardware profile file (--gpu FILE, key = value lines)
 *   2 hardware profile JSON (run store)     3 engine profile JSON (run store, `sluice profile`)
 *   4 price table CSV (plan --prices)       5 chat template (tokenizer.chat_template)
 *   6 SLO spec (--slo)                      7 generator specs (--arrival, --prompt, --priority-mix,
 *                                             --prefix-groups; the second byte picks which)
 * Properties checked beyond "no crash, no sanitizer report": a failure has a message; a scheduler
 * config that applied validates; a hardware profile read validates, and its JSON reads back to the
 * same JSON; an engine profile read writes JSON that reads back to the same JSON; a recognised chat
 * template renders a conversation. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "analysis/metrics.h"
#include "analysis/prices.h"
#include "analysis/recommend.h"
#include "cli/sched_opts.h"
#include "engine/chat.h"
#include "sched/sched.h"
#include "sched/status.h"
#include "sim/hw.h"
#include "sim/profile.h"
#include "workloads/gen.h"

static void check(bool ok)
{
    if (!ok)
        abort();
}

/* rc SL_OK, or an error with a message */
static void check_outcome(int rc, const char *err)
{
    check(rc == SL_OK || err[0] != '\0');
}

static void fuzz_sched_json(const char *text)
{
    char err[256] = "";
    sched_config_t cfg = sched_config_default();
    int rc = sched_opts_apply_json(&cfg, text, "fuzz.json", err, sizeof err);
    check_outcome(rc, err);
    if (rc == SL_OK) {
        char why[256];
        check(sched_config_validate(&cfg, why, sizeof why) == SL_OK);
    }
    /* a recorded run's or recommendation's config, which may hold keys other than knobs */
    err[0] = '\0';
    cfg = sched_config_default();
    check_outcome(an_reco_apply_config_json(text, &cfg, err, sizeof err), err);
}

/* a hardware profile read from text validates, and its JSON reads back to the same JSON */
static void check_hw(const sim_hw_t *hw)
{
    char why[256], a[4096], b[4096];
    check(sim_hw_validate(hw, why, sizeof why) == SL_OK);
    check(sim_hw_to_json(hw, a, sizeof a));
    sim_hw_t back;
    check(sim_hw_from_json(a, &back, why, sizeof why) == SL_OK);
    check(sim_hw_to_json(&back, b, sizeof b) && strcmp(a, b) == 0);
}

static void fuzz_hw_file(const char *text)
{
    char path[64], err[512] = "";
    snprintf(path, sizeof path, "/tmp/fuzz_config_hw.%d", (int)getpid());
    FILE *f = fopen(path, "w");
    if (!f)
        return;
    fputs(text, f);
    fclose(f);
    sim_hw_t hw;
    int rc = sim_hw_load_file(path, &hw, err, sizeof err);
    check_outcome(rc, err);
    if (rc == SL_OK)
        check_hw(&hw);
    remove(path);
}

static void fuzz_hw_json(const char *text)
{
    char err[256] = "";
    sim_hw_t hw;
    int rc = sim_hw_from_json(text, &hw, err, sizeof err);
    check_outcome(rc, err);
    if (rc == SL_OK)
        check_hw(&hw);
}

static void fuzz_profile_json(const char *text)
{
    char err[256] = "";
    static sim_profile_t p, back;
    static char a[65536], b[65536];
    int rc = sim_profile_from_json(text, &p, err, sizeof err);
    check_outcome(rc, err);
    if (rc != SL_OK)
        return;
    check(sim_profile_to_json(&p, a, sizeof a));
    check(sim_profile_from_json(a, &back, err, sizeof err) == SL_OK);
    check(sim_profile_to_json(&back, b, sizeof b) && strcmp(a, b) == 0);
}

static void fuzz_prices(const char *text)
{
    char err[256] = "";
    static an_prices_t prices;
    check_outcome(an_prices_parse(text, "fuzz.csv", &prices, err, sizeof err), err);
}

static void fuzz_chat(const char *text)
{
    char err[256] = "";
    eng_chat_template_t t;
    int rc = eng_chat_parse(text, &t, err, sizeof err);
    check_outcome(rc, err);
    if (rc != SL_OK)
        return;
    const eng_chat_msg_t msgs[] = {{"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello."}, {"user", "2+2?"}};
    char *out = NULL;
    check(eng_chat_render(&t, msgs, 4, 1, &out, err, sizeof err) == SL_OK && out != NULL);
    sl_free(out);
    eng_chat_template_free(&t);
}

static void fuzz_slo(const char *text)
{
    char err[256] = "";
    an_slo_t slo;
    check_outcome(an_slo_parse(text, &slo, err, sizeof err), err);
}

static void fuzz_gen_spec(uint8_t which, const char *text)
{
    char err[256] = "";
    wl_gen_config_t cfg;
    wl_gen_config_default(&cfg);
    int rc;
    switch (which % 4) {
    case 0: rc = wl_parse_arrival(text, &cfg.arrival, err, sizeof err); break;
    case 1: rc = wl_parse_length(text, &cfg.prompt, err, sizeof err); break;
    case 2: rc = wl_parse_priority_mix(text, &cfg, err, sizeof err); break;
    default: rc = wl_parse_prefix_groups(text, &cfg, err, sizeof err); break;
    }
    check_outcome(rc, err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    char *text = malloc(size);
    if (!text)
        return 0;
    memcpy(text, data + 1, size - 1);
    text[size - 1] = '\0';
    switch (data[0] % 8) {
    case 0: fuzz_sched_json(text); break;
    case 1: fuzz_hw_file(text); break;
    case 2: fuzz_hw_json(text); break;
    case 3: fuzz_profile_json(text); break;
    case 4: fuzz_prices(text); break;
    case 5: fuzz_chat(text); break;
    case 6: fuzz_slo(text); break;
    default: fuzz_gen_spec(data[1], text + (size > 2)); break;
    }
    free(text);
    return 0;
}
