/* An echo server for published UDP ports: `udpecho PORT` echoes every UDP datagram back to
 * its sender, whole, and every TCP connection's bytes back to it (the TCP side is what
 * bench/udp_ports.py compares against, through the same container). Debian's busybox-static
 * has no `nc -u`. Built static by tests/e2e/test_udp_ports.py and bench/udp_ports.py.
 */
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static int bound(int type, int port) {
    int fd = socket(AF_INET6, type, 0);
    int off = 0, on = 1;
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off); /* v4 and v6 alike */
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_port = htons(port)};
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0) { perror("bind"); exit(1); }
    return fd;
}

static void tcp_echo(int port) {
    int l = bound(SOCK_STREAM, port), on = 1;
    if (listen(l, 64) < 0) { perror("listen"); exit(1); }
    signal(SIGCHLD, SIG_IGN); /* no zombies */
    for (;;) {
        int c = accept(l, NULL, NULL);
        if (c < 0) continue;
        if (fork() == 0) {
            char buf[65536];
            ssize_t n;
            setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
            while ((n = read(c, buf, sizeof buf)) > 0)
                if (write(c, buf, n) != n) break;
            _exit(0);
        }
        close(c);
    }
}

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: udpecho PORT\n"); return 2; }
    int port = atoi(argv[1]);
    int u = bound(SOCK_DGRAM, port);
    if (fork() == 0) tcp_echo(port);
    static char buf[65536];
    for (;;) {
        struct sockaddr_in6 peer;
        socklen_t len = sizeof peer;
        ssize_t n = recvfrom(u, buf, sizeof buf, 0, (struct sockaddr *)&peer, &len);
        if (n >= 0) sendto(u, buf, n, 0, (struct sockaddr *)&peer, len);
    }
}
