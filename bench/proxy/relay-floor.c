/*
 * The floor of any stdio proxy: runs TARGET under /bin/sh -c and copies bytes both ways with
 * one thread per direction (as aip-proxy does), looking at nothing. stdio-harness.sh puts it
 * in the proxy's place, so its added latency is what the two extra pipe hops alone cost on the
 * host that day.
 *
 *   gcc -O2 -pthread -o relay-floor relay-floor.c && ./relay-floor 'TARGET COMMAND'
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

struct direction {
    int from, to;
};

static void *copy(void *arg) {
    const struct direction *d = arg;
    static __thread char buf[65536];
    ssize_t n;
    while ((n = read(d->from, buf, sizeof buf)) > 0) {
        for (ssize_t off = 0; off < n;) {
            ssize_t w = write(d->to, buf + off, (size_t)(n - off));
            if (w <= 0) {
                return NULL;
            }
            off += w;
        }
    }
    close(d->to);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: relay-floor 'TARGET COMMAND'\n");
        return 2;
    }
    int to_child[2], from_child[2];
    if (pipe(to_child) != 0 || pipe(from_child) != 0) {
        perror("pipe");
        return 1;
    }
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return 1;
    }
    if (pid == 0) {
        dup2(to_child[0], 0);
        dup2(from_child[1], 1);
        close(to_child[0]);
        close(to_child[1]);
        close(from_child[0]);
        close(from_child[1]);
        execl("/bin/sh", "sh", "-c", argv[1], (char *)NULL);
        _exit(127);
    }
    close(to_child[0]);
    close(from_child[1]);
    struct direction up = {0, to_child[1]}, down = {from_child[0], 1};
    pthread_t upstream;
    if (pthread_create(&upstream, NULL, copy, &up) != 0) {
        fprintf(stderr, "pthread_create failed\n");
        return 1;
    }
    copy(&down);
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}
