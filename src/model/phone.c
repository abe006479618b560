/* phone.c — see phone.h. */
#include "model/phone.h"
#include "core/common.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

int cti_phone_e164(const char *in, const char *default_cc, char out[CTI_E164_MAX])
{
    char d[40];
    size_t n = 0;
    bool plus = false;
    for (const char *p = in; *p; p++) {
        if (*p >= '0' && *p <= '9') {
            if (n + 1 >= sizeof d)
                return CTI_EINVAL;
            d[n++] = *p;
        } else if (*p == '+' && n == 0 && !plus) {
            plus = true;
        } else if (!strchr(" -.()/\t", *p)) {
            return CTI_EINVAL;
        }
    }
    d[n] = '\0';
    const char *digits = d;
    if (!plus && n > 2 && !strncmp(d, "00", 2)) { /* international prefix */
        plus = true;
        digits += 2;
    }
    size_t cc_len = strlen(default_cc);
    char full[40];
    if (plus)
        snprintf(full, sizeof full, "%s", digits);
    else if (!strcmp(default_cc, "1") && strlen(digits) == 11 && digits[0] == '1')
        snprintf(full, sizeof full, "%s", digits); /* NANP with its country code */
    else if (digits[0] == '0' && digits[1] != '0')
        snprintf(full, sizeof full, "%s%s", default_cc, digits + 1); /* trunk prefix */
    else if (strcmp(default_cc, "1") && !strncmp(digits, default_cc, cc_len) &&
             strlen(digits) > 10)
        snprintf(full, sizeof full, "%s", digits);
    else
        snprintf(full, sizeof full, "%s%s", default_cc, digits);
    size_t len = strlen(full);
    if (len < 8 || len > 15 || full[0] == '0')
        return CTI_EINVAL;
    out[0] = '+';
    memcpy(out + 1, full, len + 1); /* len <= 15: fits */
    return 0;
}
