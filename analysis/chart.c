/* chart.c — gnuplot driver: data + script files, then `gnuplot` in the output folder. */
#include "analysis/chart.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "sched/status.h"

bool an_chart_available(void)
{
    return system("command -v gnuplot >/dev/null 2>&1") == 0;
}

/* gnuplot string literal: single quotes, '' for a quote. */
static void put_str(FILE *f, const char *s)
{
    fputc('\'', f);
    for (; s && *s; s++) {
        if (*s == '\'')
            fputc('\'', f);
        fputc(*s, f);
    }
    fputc('\'', f);
}

static bool stem_ok(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (!(((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9')) || *s == '_' || *s == '-'))
            return false;
    return true;
}

int an_chart_write(const an_chart_t *c, const char *dir, const char *stem, char *err, size_t errlen)
{
    if (!stem_ok(stem)) {
        snprintf(err, errlen, "chart name '%s': use letters, digits, '_' and '-'", stem);
        return SL_EINVAL;
    }
    if (!an_chart_available()) {
        snprintf(err, errlen, "gnuplot not found on PATH (install gnuplot-nox)");
        return SL_EUNSUPPORTED;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.dat", dir, stem);
    FILE *f = fopen(path, "w");
    if (!f) {
        snprintf(err, errlen, "%s: cannot write", path);
        return SL_EIO;
    }
    for (int s = 0; s < c->n_series; s++) {
        fprintf(f, "# %s\n", c->series[s].name);
        for (size_t i = 0; i < c->series[s].n; i++)
            if (!isnan(c->series[s].x[i]) && !isnan(c->series[s].y[i]))
                fprintf(f, "%.9g %.9g\n", c->series[s].x[i], c->series[s].y[i]);
        fprintf(f, "\n\n");
    }
    if (fclose(f) != 0) {
        snprintf(err, errlen, "%s: cannot write", path);
        return SL_EIO;
    }
    snprintf(path, sizeof path, "%s/%s.gp", dir, stem);
    if (!(f = fopen(path, "w"))) {
        snprintf(err, errlen, "%s: cannot write", path);
        return SL_EIO;
    }
    fprintf(f, "set title ");
    put_str(f, c->title);
    fprintf(f, "\nset xlabel ");
    put_str(f, c->xlabel);
    fprintf(f, "\nset ylabel ");
    put_str(f, c->ylabel);
    fprintf(f, "\nset grid\nset key outside right\n%s%s", c->logx ? "set logscale x\n" : "",
            c->logy ? "set logscale y\n" : "");
    /* one plot command, replayed for both terminals */
    fprintf(f, "do for [t in 'svg png'] {\n"
               "  if (t eq 'svg') { set terminal svg size 900,540 dynamic noenhanced; set output '%s.svg' }\n"
               "  else { if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) { set terminal pngcairo size 900,540 noenhanced }"
               " else { set terminal png size 900,540 noenhanced }; set output '%s.png' }\n  plot ",
            stem, stem);
    for (int s = 0; s < c->n_series; s++) {
        fprintf(f, "%s'%s.dat' index %d with %s title ", s ? ", " : "", stem, s, c->style == AN_CHART_STEPS ? "steps" : c->style == AN_CHART_POINTS ? "points pt 7" : "linespoints");
        put_str(f, c->series[s].name);
    }
    if (c->n_series == 0)
        fprintf(f, "NaN notitle");
    fprintf(f, "\n  unset output\n}\n");
    if (fclose(f) != 0) {
        snprintf(err, errlen, "%s: cannot write", path);
        return SL_EIO;
    }
    char cmd[8400];
    snprintf(cmd, sizeof cmd, "cd '%s' && gnuplot '%s.gp' 2>'%s.gnuplot.log'", dir, stem, stem);
    int st = system(cmd);
    if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        snprintf(err, errlen, "gnuplot exited with status %d on %s (see %s/%s.gnuplot.log)",
                 st == -1 ? -1 : WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st), path, dir, stem);
        return SL_EIO;
    }
    struct stat sb;
    const char *ext[2] = {"png", "svg"};
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/%s.%s", dir, stem, ext[i]);
        if (stat(path, &sb) != 0 || sb.st_size == 0) {
            snprintf(err, errlen, "gnuplot wrote no %s", path);
            return SL_EIO;
        }
    }
    snprintf(path, sizeof path, "%s/%s.gnuplot.log", dir, stem);
    remove(path);
    return SL_OK;
}
