/*
 * phone.h — phone numbers to E.164, so "(415) 555-0123", "+1 415 555 0123"
 * and "14155550123" all match "+14155550123". Pure; any thread.
 */
#ifndef CTI_MODEL_PHONE_H
#define CTI_MODEL_PHONE_H

#define CTI_E164_MAX 17 /* '+' + up to 15 digits + NUL */

/* Normalizes in to E.164. default_cc is the country calling code for
 * national numbers ("1" for NANP, "44" for the UK...). Accepts spaces, dashes,
 * dots, parentheses, a leading '+' or "00", and a national trunk '0'.
 * Returns 0, or CTI_EINVAL when in is not a phone number. */
int cti_phone_e164(const char *in, const char *default_cc, char out[CTI_E164_MAX]);

#endif
