/* mms_connect_as: a daemon that runs as another uid than expected is refused with
 * MMS_ERR_WRONG_SERVER (the message names both uids) and nothing is written to `out`; the
 * expected uid connects. Prints the refusal's message, then "connected". */
#include "check.h"

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: server_uid SOCKET RIGHT_UID WRONG_UID\n");
        return 2;
    }
    uint32_t right = (uint32_t)strtoul(argv[2], NULL, 10);
    uint32_t wrong = (uint32_t)strtoul(argv[3], NULL, 10);
    mms_client *c = NULL;
    EXPECT(mms_connect_as(argv[1], wrong, &c), MMS_ERR_WRONG_SERVER);
    if (c != NULL) {
        fprintf(stderr, "out was written on failure\n");
        return 1;
    }
    CHECK(mms_connect_as(argv[1], right, &c));
    printf("connected\n");
    mms_client_free(c);
    return 0;
}
