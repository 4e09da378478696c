/* stats — see stats.h. */
#include "cache/stats.h"

#include <string.h>

void stats_print_prometheus(const struct stats *s, FILE *out)
{
    const char *family_open = "";
#define STATS_PRINT(field, family, labels, type, help)                     \
    if (strcmp(family_open, family) != 0) {                                \
        fprintf(out, "# HELP %s %s\n# TYPE %s %s\n", family, help, family, \
                type);                                                     \
        family_open = family;                                              \
    }                                                                      \
    if (labels[0])                                                         \
        fprintf(out, "%s{%s} %llu\n", family, labels,                      \
                (unsigned long long)s->field);                             \
    else                                                                   \
        fprintf(out, "%s %llu\n", family, (unsigned long long)s->field);
    STATS_ENTRIES(STATS_PRINT)
#undef STATS_PRINT
}
