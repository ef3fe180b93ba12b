/* mms_connect_with: a daemon that is stopped (the test SIGSTOPs it before running this)
 * answers nothing; a connect with a 300 ms timeout fails with MMS_ERR_TIMEOUT, whose message
 * names the socket. Prints the message. */
#include "check.h"

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: timeout SOCKET\n");
        return 2;
    }
    mms_client *c = NULL;
    EXPECT(mms_connect_with(argv[1], -1, 300, &c), MMS_ERR_TIMEOUT);
    printf("%s\n", mms_last_error());
    EXPECT(mms_connect_with(argv[1], -1, -2, &c), MMS_ERR_INVALID_ARGUMENT);
    return c == NULL ? 0 : 1;
}
