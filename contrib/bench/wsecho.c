/*
 * wsecho.c - WebSocket echo backend for appgw's benchmark (contrib/bench).
 *
 *   wsecho PORT            listens on 127.0.0.1:PORT only
 *
 * One thread, one epoll set (level-triggered), non-blocking sockets.
 *   GET /health                    -> 200 "ok\n" (keep-alive)
 *   GET with Upgrade: websocket    -> 101 + the RFC 6455 Sec-WebSocket-Accept
 *                                     (SHA-1 + base64 from OpenSSL), then every
 *                                     byte received is sent back unchanged
 *   anything else                  -> 404 and close
 * The echo is raw: a proxy relays bytes without looking at frames, so sending
 * the client's (masked) frames back is all a relay benchmark needs, and it
 * keeps the backend far cheaper than the proxy under test.
 * Backpressure: when a write would block, the unsent tail is kept, reading
 * stops, and EPOLLOUT resumes it. An upgraded, idle connection holds no buffer.
 *
 * Build: gcc -O2 -o wsecho wsecho.c -lcrypto
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define HEAD_MAX 8192
#define IOBUF (256 * 1024)

enum { S_HEAD, S_ECHO, S_CLOSING };

struct client {
    int fd;
    int state;
    char *head;          /* request head being collected (S_HEAD only) */
    size_t head_len;
    char *tail;          /* bytes a write could not take yet */
    size_t tail_len, tail_off;
};

static int epfd;
static unsigned char iobuf[IOBUF];
static const char GUID[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
static const char OK200[] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n";
static const char NF404[] = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

static void drop(struct client *c) {
    close(c->fd);
    free(c->head);
    free(c->tail);
    free(c);
}

static void watch(struct client *c, uint32_t events) {
    struct epoll_event ev = {.events = events, .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Write as much as the socket takes; keep the rest. -1: connection is dead. */
static int put(struct client *c, const void *buf, size_t len) {
    const char *p = buf;
    if (c->tail) { /* already backlogged: append (only happens around the 101) */
        char *n = realloc(c->tail, c->tail_len + len);
        if (!n) return -1;
        memcpy(n + c->tail_len, p, len);
        c->tail = n; c->tail_len += len;
        return 0;
    }
    while (len) {
        ssize_t w = send(c->fd, p, len, MSG_NOSIGNAL);
        if (w > 0) { p += w; len -= (size_t)w; continue; }
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        return -1;
    }
    if (len) {
        c->tail = malloc(len);
        if (!c->tail) return -1;
        memcpy(c->tail, p, len);
        c->tail_len = len; c->tail_off = 0;
        watch(c, EPOLLOUT);
    }
    return 0;
}

/* Value of header NAME in a NUL-terminated head, trimmed; NULL if absent. */
static const char *header(const char *head, const char *name, size_t *len) {
    size_t nl = strlen(name);
    for (const char *line = strstr(head, "\r\n"); line; line = strstr(line, "\r\n")) {
        line += 2;
        if (strncasecmp(line, name, nl) || line[nl] != ':') continue;
        const char *v = line + nl + 1, *e;
        while (*v == ' ' || *v == '\t') v++;
        e = strstr(v, "\r\n");
        if (!e) e = v + strlen(v);
        while (e > v && (e[-1] == ' ' || e[-1] == '\t')) e--;
        *len = (size_t)(e - v);
        return v;
    }
    return NULL;
}

static int has_token(const char *v, size_t len, const char *tok) {
    size_t tl = strlen(tok);
    for (size_t i = 0; i + tl <= len; i++)
        if (!strncasecmp(v + i, tok, tl)) return 1;
    return 0;
}

/* Answer every complete request in c->head. -1: close the connection. */
static int on_head(struct client *c) {
    for (;;) {
        c->head[c->head_len] = 0;
        char *end = strstr(c->head, "\r\n\r\n");
        if (!end) return c->head_len >= HEAD_MAX - 1 ? -1 : 0;
        size_t used = (size_t)(end - c->head) + 4;
        end[2] = 0; /* the head, ending with its last CRLF */
        size_t kl = 0, ul = 0;
        const char *key = header(c->head, "Sec-WebSocket-Key", &kl);
        const char *upg = header(c->head, "Upgrade", &ul);
        if (key && upg && has_token(upg, ul, "websocket") && kl > 0 && kl < 64) {
            char in[128], acc[64], resp[200];
            unsigned char md[EVP_MAX_MD_SIZE];
            unsigned int mdl = 0;
            memcpy(in, key, kl);
            memcpy(in + kl, GUID, sizeof GUID - 1);
            EVP_Digest(in, kl + sizeof GUID - 1, md, &mdl, EVP_sha1(), NULL);
            EVP_EncodeBlock((unsigned char *)acc, md, (int)mdl);
            int n = snprintf(resp, sizeof resp,
                             "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                             "Sec-WebSocket-Accept: %s\r\n\r\n", acc);
            size_t extra = c->head_len - used;  /* frames sent right behind the request */
            char *head = c->head;
            c->head = NULL; c->head_len = 0;
            c->state = S_ECHO;
            int rc = put(c, resp, (size_t)n);
            if (rc == 0 && extra) rc = put(c, head + used, extra);
            free(head);
            return rc;
        }
        if (!strncmp(c->head, "GET /health ", 12) || !strncmp(c->head, "HEAD /health ", 13)) {
            if (put(c, OK200, sizeof OK200 - 1) < 0) return -1;
        } else {
            put(c, NF404, sizeof NF404 - 1);
            return -1;
        }
        memmove(c->head, c->head + used, c->head_len - used);
        c->head_len -= used;
        if (c->tail) return 0; /* let the answer drain before the next request */
    }
}

static void readable(struct client *c) {
    if (c->state == S_HEAD) {
        ssize_t r = recv(c->fd, c->head + c->head_len, HEAD_MAX - 1 - c->head_len, 0);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) { drop(c); return; }
        if (r < 0) return;
        c->head_len += (size_t)r;
        if (on_head(c) < 0) drop(c);
        return;
    }
    ssize_t r = recv(c->fd, iobuf, sizeof iobuf, 0);
    if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) { drop(c); return; }
    if (r > 0 && put(c, iobuf, (size_t)r) < 0) drop(c);
}

static void writable(struct client *c) {
    while (c->tail_off < c->tail_len) {
        ssize_t w = send(c->fd, c->tail + c->tail_off, c->tail_len - c->tail_off, MSG_NOSIGNAL);
        if (w > 0) { c->tail_off += (size_t)w; continue; }
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        drop(c);
        return;
    }
    free(c->tail);
    c->tail = NULL; c->tail_len = c->tail_off = 0;
    watch(c, EPOLLIN);
    if (c->state == S_HEAD && c->head_len && on_head(c) < 0) drop(c);
}

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: %s PORT\n", argv[0]); return 2; }
    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    if (!getrlimit(RLIMIT_NOFILE, &rl)) { rl.rlim_cur = rl.rlim_max; setrlimit(RLIMIT_NOFILE, &rl); }

    int one = 1, ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1])),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, 4096)) { perror("wsecho: bind/listen"); return 1; }
    epfd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(epfd, EPOLL_CTL_ADD, ls, &lev);
    fprintf(stderr, "wsecho: listening on 127.0.0.1:%s\n", argv[1]);

    struct epoll_event evs[512];
    for (;;) {
        int n = epoll_wait(epfd, evs, 512, -1);
        if (n < 0 && errno != EINTR) { perror("wsecho: epoll_wait"); return 1; }
        for (int i = 0; i < n; i++) {
            struct client *c = evs[i].data.ptr;
            if (!c) {
                int fd;
                while ((fd = accept4(ls, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    c = calloc(1, sizeof *c);
                    c->head = malloc(HEAD_MAX);
                    if (!c->head) { close(fd); free(c); continue; }
                    c->fd = fd;
                    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
                    epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
                }
                continue;
            }
            if (evs[i].events & EPOLLOUT) writable(c);
            else readable(c);
        }
    }
}
