/* netkit-cni, the binary a container runtime runs on the node (/opt/cni/bin/netkit-cni): it
 * hands the request to the node agent, which runs the plugin (netkit/cni/plugin.py) in its own
 * container with the node's network, as Multus's thick plugin and Cilium's do. A node needs no
 * Python for it; the agent's DaemonSet copies this binary in.
 *
 * Protocol on the agent's unix socket (NETKIT_CNI_SOCKET, default /run/netkit/cni.sock): the
 * request is every CNI_* environment variable as "KEY=VALUE\0", an empty "\0", then the
 * configuration (stdin) until the shim shuts its side down; the reply is the exit status as a
 * decimal line, then what the plugin prints. The agent not answering is the spec's error 11
 * (try again later), printed as the spec's error object.
 *
 * Build: cc -O2 -static -o netkit-cni netkit/cni/shim.c
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

extern char **environ;

static int fail(const char *msg, const char *details) {
    printf("{\"cniVersion\": \"1.0.0\", \"code\": 11, \"msg\": \"%s\", \"details\": \"%s\"}\n", msg, details);
    return 1;
}

static int send_all(int fd, const char *buf, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, buf, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        buf += w;
        n -= (size_t)w;
    }
    return 0;
}

int main(void) {
    const char *path = getenv("NETKIT_CNI_SOCKET");
    if (path == NULL || *path == '\0') path = "/run/netkit/cni.sock";
    struct sockaddr_un addr;
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof addr.sun_path) return fail("the netkit agent's socket path is too long", path);
    strcpy(addr.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0)
        return fail("the netkit agent does not answer on its socket (is it running on this node?)", path);
    for (char **e = environ; *e != NULL; e++)
        if (strncmp(*e, "CNI_", 4) == 0 && send_all(fd, *e, strlen(*e) + 1) != 0)
            return fail("lost the netkit agent while sending the request", path);
    char buf[65536];
    if (send_all(fd, "", 1) != 0) return fail("lost the netkit agent while sending the request", path);
    for (;;) {
        ssize_t n = read(0, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        if (send_all(fd, buf, (size_t)n) != 0) return fail("lost the netkit agent while sending the request", path);
    }
    shutdown(fd, SHUT_WR);
    char status[16];
    size_t got = 0;
    while (got < sizeof status - 1) { /* the status line */
        ssize_t n = read(fd, status + got, 1);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return fail("the netkit agent closed the connection without an answer", path);
        if (status[got] == '\n') break;
        got++;
    }
    status[got] = '\0';
    int code = atoi(status);
    for (;;) { /* the plugin's output, as it is */
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        if (send_all(1, buf, (size_t)n) != 0) return 1;
    }
    close(fd);
    return code;
}
