/* Helpers for the C test programs: CHECK(call) stops the program with the call, its status
 * and mms_last_error() when a call fails; EXPECT(call, status) when it returns another status. */
#ifndef MMSHARE_TEST_CHECK_H
#define MMSHARE_TEST_CHECK_H
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "mmshare.h"

#define CHECK(call)                                                                     \
    do {                                                                                \
        int s_ = (call);                                                                \
        if (s_ != MMS_OK) {                                                             \
            fprintf(stderr, "%s:%d: %s -> %s: %s\n", __FILE__, __LINE__, #call,        \
                    mms_status_name(s_), mms_last_error());                             \
            exit(1);                                                                    \
        }                                                                               \
    } while (0)

#define EXPECT(call, status)                                                            \
    do {                                                                                \
        int s_ = (call);                                                                \
        if (s_ != (status)) {                                                           \
            fprintf(stderr, "%s:%d: %s -> %s, expected %s (%s)\n", __FILE__, __LINE__,  \
                    #call, mms_status_name(s_), #status, mms_last_error());             \
            exit(1);                                                                    \
        }                                                                               \
        if (s_ != MMS_OK) printf("%s: %s\n", #status, mms_last_error());                \
    } while (0)
#endif
