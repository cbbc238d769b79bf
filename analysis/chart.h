/* chart.h — line charts through gnuplot: data files and a generated script, PNG and SVG out.
 *
 * an_chart_write() writes DIR/STEM.dat (one block per series), DIR/STEM.gp (the script) and runs
 * `gnuplot STEM.gp` in DIR, which writes DIR/STEM.png (pngcairo, else png) and DIR/STEM.svg. The
 * exit status of gnuplot is checked and both images must exist afterwards. gnuplot-nox is enough.
 */
#ifndef SLUICE_AN_CHART_H
#define SLUICE_AN_CHART_H

#include <stdbool.h>
#include <stddef.h>

typedef struct an_series {
    const char *name;     /* legend */
    const double *x, *y;  /* n points; NaN points are skipped */
    size_t n;
} an_series_t;

typedef enum an_chart_style {
    AN_CHART_LINES = 0, /* lines with points */
    AN_CHART_STEPS,     /* steps (CDFs) */
    AN_CHART_POINTS,    /* scatter */
} an_chart_style_t;

typedef struct an_chart {
    const char *title, *xlabel, *ylabel;
    bool logx, logy;
    an_chart_style_t style;
    const an_series_t *series;
    int n_series;
} an_chart_t;

/* True when a gnuplot executable is on PATH. Cannot fail. */
bool an_chart_available(void);

/* Writes the chart's PNG and SVG (see above). SL_EUNSUPPORTED when gnuplot is missing, SL_EIO
 * when a file cannot be written, SL_EINVAL for a stem with characters other than [A-Za-z0-9_-],
 * SL_EIO when gnuplot fails ("gnuplot exited with status 1 on DIR/STEM.gp"); err says which. */
int an_chart_write(const an_chart_t *c, const char *dir, const char *stem, char *err, size_t errlen);

#endif
