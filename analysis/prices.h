/* prices.h — the GPU price table for capacity plans: dollars per GPU-hour by hardware profile.
 *
 * Format (CSV, UTF-8): a header line `gpu,usd_per_gpu_hour,source,date`, then one row per GPU
 * kind; '#' starts a comment line, blank lines are skipped. gpu is a profile name (a100-80gb),
 * usd_per_gpu_hour a positive number, source and date free text (date YYYY-MM-DD). A row with the
 * wrong number of fields, a price that is not a positive number, an empty or duplicate gpu name is
 * refused with "prices.csv:4: usd_per_gpu_hour: expected a positive number, got 'abc'".
 * The built-in table (an_prices_builtin) is the text of docs/prices.csv, parsed the same way.
 */
#ifndef SLUICE_AN_PRICES_H
#define SLUICE_AN_PRICES_H

#include <stddef.h>

enum { AN_PRICES_MAX = 64 };

typedef struct an_price {
    char gpu[32];
    double usd_per_gpu_hour;
    char source[160];
    char date[16];
} an_price_t;

typedef struct an_prices {
    an_price_t row[AN_PRICES_MAX];
    int n;
} an_prices_t;

/* Parses CSV text; origin names it in messages. SL_EFORMAT with "ORIGIN:LINE: why" in err; *out
 * then unspecified. */
int an_prices_parse(const char *text, const char *origin, an_prices_t *out, char *err, size_t errlen);
/* Reads and parses a file. SL_EIO ("PATH: cannot read: ...") or SL_EFORMAT. */
int an_prices_load(const char *path, an_prices_t *out, char *err, size_t errlen);
/* The documented defaults (docs/prices.csv). Cannot fail. */
void an_prices_builtin(an_prices_t *out);
/* The row for gpu, or NULL. Cannot fail. */
const an_price_t *an_prices_find(const an_prices_t *p, const char *gpu);

#endif
