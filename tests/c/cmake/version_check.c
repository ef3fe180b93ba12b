/* Built by tests/c/cmake/CMakeLists.txt: prints the header's and the library's versions,
 * and connects to the daemon at argv[1] if given. Exits non-zero if they disagree. */
#include <stdio.h>
#include <string.h>
#include <mmshare.h>

int main(int argc, char **argv) {
    char header[32];
    snprintf(header, sizeof header, "%d.%d.%d", MMS_VERSION_MAJOR, MMS_VERSION_MINOR,
             MMS_VERSION_PATCH);
    printf("header %s library %s number %d\n", header, mms_version(), mms_version_number());
    if (strcmp(header, mms_version()) != 0 || mms_version_number() != MMS_VERSION_NUMBER) {
        return 1;
    }
    if (argc > 1) {
        mms_client *client = NULL;
        if (mms_connect(argv[1], &client) != MMS_OK) {
            fprintf(stderr, "connect: %s\n", mms_last_error());
            return 2;
        }
        printf("connected\n");
        mms_client_free(client);
    }
    return 0;
}
