/* cmd_calibrate.c — `sluice calibrate`: fit the cost model to the calibration tables, and with
 * --check print each operator's error on held-out token counts (exit 1 past 5% median). */
#include <stdio.h>
#include <string.h>

#include "analysis/store.h"
#include "cli/cli.h"
#include "sched/status.h"
#include "sim/calib.h"
#include "sim/hw.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: sluice calibrate [--check] [--gpu a100-80gb|h100-sxm|FILE|all] [--calib-dir DIR]\n"
            "                        [--db FILE] [--no-record]\n"
            "  fits the cost model (GSL weighted least squares) to DIR/<gpu>/*.csv\n"
            "  (default DIR: " SIM_CALIB_DEFAULT_DIR ") and stores the profile and its fits under the\n"
            "  profile's name in the run store (default ./sluice.db), where `sluice sim --gpu NAME`\n"
            "  finds a profile that is not built in\n"
            "  --check   fit on every other token count, report the median absolute error on the\n"
            "            others per operator; exit 1 if any exceeds 5%%\n");
}

static void print_fits(const sim_calib_t *c, const sim_hw_t *hw)
{
    printf("%s: reference card %.0f TFLOP/s, %.3f TB/s; attention from %s\n", hw->name,
           c->ref_peak_flops / 1e12, c->ref_hbm_bw / 1e12, c->attn_source);
    printf("  %-26s %3s %10s %12s %12s\n", "operator", "tp", "floor_us", "bw_eff", "flop_eff");
    for (int i = 0; i < c->n_tables; i++)
        for (int op = 0; op < SIM_N_OPS; op++) {
            const sim_roof_fit_t *f = &c->tables[i].fit[op];
            printf("  %-26s %3d %10.2f %12.3f", sim_op_name(op), c->tables[i].tp, f->c0 * 1e6,
                   f->xb > 0 ? 1.0 / (f->xb * c->ref_hbm_bw) : 0.0);
            if (f->xf > 0)
                printf(" %12.3f\n", 1.0 / (f->xf * c->ref_peak_flops));
            else
                printf(" %12s\n", "-");
        }
    const sim_attn_fit_t *a = &c->attn;
    printf("  attention prefill: max(%.3g s, %.3g s + %.4g s/FLOP (eff %.3f) + %.3g s/token)\n", a->a0,
           a->a3, a->a1, a->a1 > 0 ? 1.0 / (a->a1 * a->ref_peak_flops) : 0.0, a->a2);
    printf("  attention decode:  %.3g s + %.4g s/byte (eff %.3f) + %.4g s/byte of the longest + %.3g s/seq\n",
           a->d0, a->d1, a->d1 > 0 ? 1.0 / (a->d1 * a->ref_hbm_bw) : 0.0, a->d2, a->d3);
}

/* Saves the profile (op "profile", sim_hw_to_json) and every fit (op "<operator>/tp<N>":
 * {"c0", "xb", "xf"}; op "attention": the attention coefficients) under hw->name. */
static int store_fits(an_store_t *st, const sim_hw_t *hw, const sim_calib_t *c, int *n_saved)
{
    char json[1024], op[64];
    if (!sim_hw_to_json(hw, json, sizeof json))
        return SL_EINVAL;
    int rc = an_calib_save(st, hw->name, "profile", json);
    *n_saved = rc == SL_OK;
    for (int i = 0; rc == SL_OK && i < c->n_tables; i++)
        for (int k = 0; rc == SL_OK && k < SIM_N_OPS; k++) {
            const sim_roof_fit_t *f = &c->tables[i].fit[k];
            snprintf(op, sizeof op, "%s/tp%d", sim_op_name(k), c->tables[i].tp);
            snprintf(json, sizeof json, "{\"c0\": %.17g, \"xb\": %.17g, \"xf\": %.17g, \"ref_peak_flops\": %.17g, "
                     "\"ref_hbm_bw\": %.17g}", f->c0, f->xb, f->xf, c->ref_peak_flops, c->ref_hbm_bw);
            rc = an_calib_save(st, hw->name, op, json);
            *n_saved += rc == SL_OK;
        }
    const sim_attn_fit_t *a = &c->attn;
    snprintf(json, sizeof json, "{\"a0\": %.17g, \"a1\": %.17g, \"a2\": %.17g, \"a3\": %.17g, \"d0\": %.17g, "
             "\"d1\": %.17g, \"d2\": %.17g, \"d3\": %.17g, \"ref_peak_flops\": %.17g, \"ref_hbm_bw\": %.17g, "
             "\"source\": \"%s\"}", a->a0, a->a1, a->a2, a->a3, a->d0, a->d1, a->d2, a->d3, a->ref_peak_flops,
             a->ref_hbm_bw, c->attn_source);
    if (rc == SL_OK && (rc = an_calib_save(st, hw->name, "attention", json)) == SL_OK)
        ++*n_saved;
    return rc;
}

static int check(const sim_calib_t *c, const sim_hw_t *hw, int *over)
{
    sim_check_row_t rows[96];
    int n = sim_calib_check(c, rows, 96);
    printf("%s (tables: %s; held out: every other M / size, every third attention row)\n", hw->name, c->gpu);
    printf("  %-26s %3s %5s %5s %12s %12s\n", "operator", "tp", "fit", "held", "model MdAPE", "roofline");
    for (int i = 0; i < n; i++) {
        const sim_check_row_t *r = &rows[i];
        bool bad = r->gated && !(r->mape_model <= 0.05);
        *over += bad;
        printf("  %-26s %3d %5d %5d %11.2f%% %11.2f%%%s\n", r->op, r->tp, r->n_fit, r->n_held,
               100 * r->mape_model, 100 * r->mape_roof, bad ? "  OVER 5%" : "");
    }
    return n;
}

int cmd_calibrate(int argc, char **argv)
{
    const char *gpu = "all", *dir = SIM_CALIB_DEFAULT_DIR, *db = "sluice.db";
    bool do_check = false, no_record = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--check"))
            do_check = true;
        else if (!strcmp(argv[i], "--no-record"))
            no_record = true;
        else if (!strcmp(argv[i], "--db") && i + 1 < argc)
            db = argv[++i];
        else if (!strcmp(argv[i], "--gpu") && i + 1 < argc)
            gpu = argv[++i];
        else if (!strcmp(argv[i], "--calib-dir") && i + 1 < argc)
            dir = argv[++i];
        else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return cli_fail(argv[0], "unknown or incomplete option '%s'", argv[i]);
        }
    }
    const char *all[] = {"a100-80gb", "h100-sxm"};
    const char *one[] = {gpu};
    bool is_all = !strcmp(gpu, "all");
    int ngpu = is_all ? 2 : 1, over = 0;
    an_store_t *st = NULL;
    if (!do_check && !no_record && an_store_open(db, &st) != SL_OK) {
        cli_fail(argv[0], "%s: %s", db, st ? an_store_errmsg(st) : "out of memory");
        an_store_close(st);
        return 2;
    }
    int code = 0;
    for (int g = 0; g < ngpu && !code; g++) {
        sim_hw_t hw;
        char err[512];
        const char *name = is_all ? all[g] : one[g];
        if (sim_hw_resolve(name, &hw, err, sizeof err) != SL_OK) {
            code = cli_fail(argv[0], "%s (or 'all')", err);
            break;
        }
        if (!hw.calib_gpu[0]) {
            code = cli_fail(argv[0], "GPU profile '%s' names no calibration tables (calib_gpu)", hw.name);
            break;
        }
        sim_calib_t *c = sim_calib_load(dir, hw.calib_gpu, do_check, err, sizeof err);
        if (!c) {
            code = cli_fail(argv[0], "%s", err);
            break;
        }
        int n_saved = 0;
        if (do_check) {
            check(c, &hw, &over);
        } else {
            print_fits(c, &hw);
            if (st && store_fits(st, &hw, c, &n_saved) != SL_OK)
                code = cli_fail(argv[0], "%s: cannot store the fits of %s: %s", db, hw.name, an_store_errmsg(st));
            else if (st)
                printf("stored profile %s and %d fits in %s (sluice sim --gpu %s --db %s)\n", hw.name, n_saved - 1,
                       db, hw.name, db);
        }
        sim_calib_free(c);
        if (g + 1 < ngpu)
            printf("\n");
    }
    an_store_close(st);
    if (code || !do_check)
        return code;
    printf("\n%s: %d operator(s) over 5%% median absolute error on held-out points\n", over ? "FAIL" : "PASS", over);
    return over ? 1 : 0;
}
