/*
 * wsload.c - WebSocket load client for appgw's benchmark (contrib/bench).
 *
 *   wsload MODE PORT PATH CONNS SIZE SECONDS [PID]      (always 127.0.0.1)
 *
 * MODE pingpong  each connection sends one masked binary frame with SIZE
 *                payload bytes, waits until the whole frame came back, sends
 *                the next one. Result: msgs_per_s and round-trip p50/p90/p99
 *                in microseconds (log-linear histogram, ~1.5 % resolution).
 * MODE bulk      each connection streams frames of SIZE payload bytes while
 *                reading the echo, with at most WSLOAD_WINDOW bytes (default
 *                1 MiB) sent but not yet echoed. Result: MiB_per_s echoed back.
 * MODE idle      opens CONNS connections, pings each once, waits
 *                WSLOAD_SETTLE s (default 2), and reports the resident memory
 *                (VmRSS) of process PID and all its descendants before the
 *                first connection and after the ping, per connection
 *                (kib_per_conn). Holds them until SECONDS have passed, pings
 *                each again and reports how many answered (alive).
 *
 * Every connection makes a real handshake: random Sec-WebSocket-Key, status
 * 101 and the exact Sec-WebSocket-Accept are checked. The peer is expected
 * to echo raw bytes (wsecho.c). Handshakes run WSLOAD_PARALLEL (default 64)
 * at a time; WSLOAD_OPEN_BUDGET (s, default 90) bounds the opening phase.
 * One thread, one epoll set. The last line printed is "RESULT k=v ...",
 * including cpu_s, the client's own CPU time (user + system).
 *
 * Build: gcc -O2 -o wsload wsload.c -lcrypto
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { C_CONNECT, C_REQUEST, C_RESPONSE, C_OPEN, C_DEAD };
enum { M_PINGPONG, M_BULK, M_IDLE };

struct conn {
    int fd, state;
    uint32_t events;          /* what epoll watches now */
    char want[32];            /* expected Sec-WebSocket-Accept */
    char *io;                 /* handshake request, then its response */
    size_t io_len, io_off;
    uint64_t deadline;        /* handshake */
    uint64_t sent, echoed;    /* bytes */
    size_t pos;               /* offset in the outgoing frame / stream */
    uint64_t t0;              /* pingpong: when the current frame left */
};

static int ep, mode;
static unsigned char *frame, *stream;
static size_t frame_len, stream_len;
static uint64_t window = 1 << 20;
static char rx[512 * 1024];

/* ---- latency histogram: 1 us steps up to 128 us, then 64 steps per octave ---- */
#define HBUCKETS (128 + 40 * 64)
static uint64_t hist[HBUCKETS], hcount;

static int hindex(uint64_t us) {
    if (us < 128) return (int)us;
    int b = 63 - __builtin_clzll(us), shift = b - 6;
    int i = 128 + (b - 7) * 64 + (int)((us >> shift) - 64);
    return i < HBUCKETS ? i : HBUCKETS - 1;
}
static double hvalue(int i) {
    if (i < 128) return i;
    int b = (i - 128) / 64 + 7, sub = (i - 128) % 64;
    return (double)((uint64_t)(64 + sub) << (b - 6)) * (1 + 0.5 / (64 + sub)); /* bucket middle */
}
static double percentile(double p) {
    if (!hcount) return 0;
    uint64_t rank = (uint64_t)(p / 100.0 * (double)hcount), seen = 0;
    for (int i = 0; i < HBUCKETS; i++)
        if ((seen += hist[i]) > rank) return hvalue(i);
    return hvalue(HBUCKETS - 1);
}

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static void sleep_s(double s) {
    if (s <= 0) return;
    struct timespec t = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&t, &t) && errno == EINTR) {}
}

static double env_num(const char *name, double dflt) {
    const char *v = getenv(name);
    return v && *v ? atof(v) : dflt;
}

static double cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static void set_events(struct conn *c, uint32_t events) {
    if (c->events == events) return;
    c->events = events;
    struct epoll_event ev = {.events = events, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static void kill_conn(struct conn *c) {
    if (c->state == C_DEAD) return;
    close(c->fd);
    c->state = C_DEAD;
    free(c->io);
    c->io = NULL;
}

/* One masked binary frame with SIZE payload bytes; bulk also gets a stream of
 * several frames back to back so that one write can carry ~256 KiB. */
static void make_frames(size_t size) {
    size_t ext = size < 126 ? 0 : size < 65536 ? 2 : 8, h = 2 + ext;
    unsigned char key[4];
    frame_len = h + 4 + size;
    frame = malloc(frame_len);
    frame[0] = 0x82;
    if (ext == 0) frame[1] = 0x80 | (unsigned char)size;
    else if (ext == 2) { frame[1] = 0x80 | 126; frame[2] = (unsigned char)(size >> 8); frame[3] = (unsigned char)size; }
    else { frame[1] = 0x80 | 127; for (int i = 0; i < 8; i++) frame[2 + i] = (unsigned char)((uint64_t)size >> (56 - 8 * i)); }
    RAND_bytes(key, 4);
    memcpy(frame + h, key, 4);
    for (size_t i = 0; i < size; i++) frame[h + 4 + i] = (unsigned char)("0123456789abcdef"[i & 15] ^ key[i & 3]);
    size_t k = frame_len >= 256 * 1024 ? 1 : 256 * 1024 / frame_len;
    stream_len = k * frame_len;
    stream = malloc(stream_len);
    for (size_t i = 0; i < k; i++) memcpy(stream + i * frame_len, frame, frame_len);
}

/* ---- resident memory of a process tree, from /proc ---- */
static long proc_field(int pid, const char *file, const char *key) {
    char path[64], line[256];
    long v = -1;
    snprintf(path, sizeof path, "/proc/%d/%s", pid, file);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t kl = strlen(key);
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, key, kl)) { v = atol(line + kl); break; }
    fclose(f);
    return v;
}

static long tree_rss_kib(int root, int *nproc) {
    enum { MAXP = 32768 };
    static int pid[MAXP], ppid[MAXP];
    int n = 0;
    DIR *d = opendir("/proc");
    struct dirent *e;
    while (d && (e = readdir(d)) && n < MAXP) {
        if (!isdigit((unsigned char)e->d_name[0])) continue;
        pid[n] = atoi(e->d_name);
        ppid[n] = (int)proc_field(pid[n], "status", "PPid:");
        n++;
    }
    if (d) closedir(d);
    static int todo[MAXP];
    int nt = 0;
    long kib = 0;
    todo[nt++] = root;
    for (int i = 0; i < nt; i++) {
        long r = proc_field(todo[i], "status", "VmRSS:");
        if (r > 0) kib += r;
        for (int j = 0; j < n && nt < MAXP; j++)
            if (ppid[j] == todo[i]) todo[nt++] = pid[j];
    }
    if (nproc) *nproc = nt;
    return kib;
}

/* ---- opening connections ---- */
static int hs_start(struct conn *c, struct sockaddr_in *sa, int port, const char *path, double tmo) {
    unsigned char raw[16], md[EVP_MAX_MD_SIZE];
    char key[32], in[96];
    unsigned int mdl = 0;
    int one = 1;
    memset(c, 0, sizeof *c);
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) { c->state = C_DEAD; return -1; }
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    RAND_bytes(raw, sizeof raw);
    EVP_EncodeBlock((unsigned char *)key, raw, sizeof raw);
    int kl = snprintf(in, sizeof in, "%s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", key);
    EVP_Digest(in, (size_t)kl, md, &mdl, EVP_sha1(), NULL);
    EVP_EncodeBlock((unsigned char *)c->want, md, (int)mdl);
    c->io = malloc(4096);
    c->io_len = (size_t)snprintf(c->io, 4096,
                                 "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                                 "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n", path, port, key);
    c->deadline = now_ns() + (uint64_t)(tmo * 1e9);
    c->state = C_CONNECT;
    c->events = EPOLLOUT;
    if (connect(c->fd, (struct sockaddr *)sa, sizeof *sa) && errno != EINPROGRESS) { kill_conn(c); return -1; }
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
    return 0;
}

/* Advance a handshake. 1 = open, 0 = not yet, -1 = failed (why set). */
static int hs_step(struct conn *c, const char **why) {
    if (c->state == C_CONNECT) {
        int err = 0;
        socklen_t l = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
        if (err) { *why = "connect failed"; return -1; }
        c->state = C_REQUEST;
    }
    if (c->state == C_REQUEST) {
        while (c->io_off < c->io_len) {
            ssize_t w = send(c->fd, c->io + c->io_off, c->io_len - c->io_off, MSG_NOSIGNAL);
            if (w > 0) { c->io_off += (size_t)w; continue; }
            if (w < 0 && errno == EINTR) continue;
            if (w < 0 && errno == EAGAIN) return 0;
            *why = "send failed"; return -1;
        }
        c->state = C_RESPONSE;
        c->io_len = 0;
        set_events(c, EPOLLIN);
        return 0;
    }
    for (;;) { /* C_RESPONSE: collect the 101 head; nothing may follow it */
        if (c->io_len >= 4095) { *why = "response head too large"; return -1; }
        ssize_t r = recv(c->fd, c->io + c->io_len, 4095 - c->io_len, 0);
        if (r == 0) { *why = "closed during handshake"; return -1; }
        if (r < 0) {
            if (errno == EAGAIN || errno == EINTR) return 0;
            *why = "recv failed"; return -1;
        }
        c->io_len += (size_t)r;
        c->io[c->io_len] = 0;
        char *end = strstr(c->io, "\r\n\r\n");
        if (!end) continue;
        if (strncmp(c->io, "HTTP/1.1 101", 12)) { *why = "status is not 101"; return -1; }
        if ((size_t)(end + 4 - c->io) != c->io_len) { *why = "bytes after the 101 head"; return -1; }
        end[2] = 0;
        int ok = 0;
        for (char *l = strstr(c->io, "\r\n"); l && !ok; l = strstr(l, "\r\n")) {
            l += 2;
            if (strncasecmp(l, "Sec-WebSocket-Accept:", 21)) continue;
            char *v = l + 21;
            while (*v == ' ') v++;
            size_t wl = strlen(c->want);
            ok = !strncmp(v, c->want, wl) && (v[wl] == '\r' || v[wl] == ' ');
            if (!ok) { *why = "wrong Sec-WebSocket-Accept"; return -1; }
        }
        if (!ok) { *why = "no Sec-WebSocket-Accept"; return -1; }
        free(c->io);
        c->io = NULL;
        c->state = C_OPEN;
        return 1;
    }
}

static int open_all(struct conn *cs, int n, int port, const char *path, int *failed, const char **first_why) {
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int par = (int)env_num("WSLOAD_PARALLEL", 64), next = 0, inflight = 0, opened = 0;
    double tmo = env_num("WSLOAD_CONNECT_TIMEOUT", 10);
    uint64_t stop = now_ns() + (uint64_t)(env_num("WSLOAD_OPEN_BUDGET", 90) * 1e9);
    struct epoll_event evs[256];
    *failed = 0;
    while (next < n || inflight) {
        uint64_t now = now_ns();
        while (next < n && inflight < par && now < stop) {
            if (hs_start(&cs[next++], &sa, port, path, tmo) == 0) inflight++;
            else if (!(*failed)++) *first_why = "socket/connect failed";
        }
        if (now >= stop) n = next;           /* budget used: no more new ones */
        if (*failed >= 50 && !opened) break; /* target is clearly broken */
        if (!inflight) continue;
        int k = epoll_wait(ep, evs, 256, 20);
        for (int i = 0; i < k; i++) {
            struct conn *c = evs[i].data.ptr;
            if (c->state == C_OPEN || c->state == C_DEAD) continue;
            const char *why = NULL;
            int r = hs_step(c, &why);
            if (r == 1) { opened++; inflight--; }
            else if (r < 0) { if (!(*failed)++) *first_why = why; kill_conn(c); inflight--; }
        }
        now = now_ns();
        for (int i = 0; i < next; i++)
            if (cs[i].state != C_OPEN && cs[i].state != C_DEAD && now > cs[i].deadline) {
                if (!(*failed)++) *first_why = "handshake timeout";
                kill_conn(&cs[i]);
                inflight--;
            }
    }
    return opened;
}

/* ---- data phase ---- */
static int pp_push(struct conn *c) { /* rest of the current frame; -1 dead */
    while (c->pos < frame_len) {
        ssize_t w = send(c->fd, frame + c->pos, frame_len - c->pos, MSG_NOSIGNAL);
        if (w > 0) { c->pos += (size_t)w; c->sent += (uint64_t)w; continue; }
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && errno == EAGAIN) { set_events(c, EPOLLIN | EPOLLOUT); return 0; }
        return -1;
    }
    set_events(c, EPOLLIN);
    return 0;
}

static int bulk_push(struct conn *c) {
    for (;;) {
        uint64_t room = window - (c->sent - c->echoed);
        if (c->sent - c->echoed >= window) { set_events(c, EPOLLIN); return 0; }
        size_t len = stream_len - c->pos;
        if (len > room) len = (size_t)room;
        ssize_t w = send(c->fd, stream + c->pos, len, MSG_NOSIGNAL);
        if (w > 0) { c->pos = (c->pos + (size_t)w) % stream_len; c->sent += (uint64_t)w; continue; }
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && errno == EAGAIN) { set_events(c, EPOLLIN | EPOLLOUT); return 0; }
        return -1;
    }
}

/* Run the event loop until `until`. `start`: send the first frame on every
 * connection (else carry on with what is in flight); pingpong records
 * latencies when `timed`. In idle mode (one ping per connection) it returns
 * when every ping is back; a connection whose echo is still missing then is
 * closed and counted as an error. */
static uint64_t loop(struct conn *cs, int n, uint64_t until, int start, int timed, int *errors) {
    struct epoll_event evs[512];
    uint64_t msgs = 0;
    int pending = 0;
    if (!start) {
        /* keep going */
    } else if (mode == M_IDLE || mode == M_PINGPONG) {
        for (int i = 0; i < n; i++) {
            if (cs[i].state != C_OPEN) continue;
            cs[i].pos = 0; cs[i].echoed = cs[i].sent = 0; cs[i].t0 = now_ns();
            if (pp_push(&cs[i]) < 0) { kill_conn(&cs[i]); (*errors)++; } else pending++;
        }
    } else {
        for (int i = 0; i < n; i++) if (cs[i].state == C_OPEN) set_events(&cs[i], EPOLLIN | EPOLLOUT);
    }
    for (;;) {
        uint64_t now = now_ns();
        if (now >= until || (mode == M_IDLE && !pending)) break;
        uint64_t left = (until - now) / 1000000 + 1;
        int k = epoll_wait(ep, evs, 512, left > 50 ? 50 : (int)left);
        for (int i = 0; i < k; i++) {
            struct conn *c = evs[i].data.ptr;
            if (c->state != C_OPEN) continue;
            uint32_t e = evs[i].events;
            if (e & EPOLLOUT) {
                if ((mode == M_BULK ? bulk_push(c) : pp_push(c)) < 0) goto dead;
            }
            if (!(e & (EPOLLIN | EPOLLERR | EPOLLHUP))) continue;
            ssize_t r = recv(c->fd, rx, sizeof rx, 0);
            if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
            if (r <= 0) goto dead;
            c->echoed += (uint64_t)r;
            if (mode == M_BULK) {
                if (c->echoed > c->sent) goto dead;
                if (!(c->events & EPOLLOUT) && bulk_push(c) < 0) goto dead;
                continue;
            }
            if (c->echoed > frame_len) goto dead; /* an echo never exceeds the frame */
            if (c->echoed < frame_len) continue;
            uint64_t t = now_ns();
            msgs++;
            if (mode == M_IDLE) { pending--; c->echoed = c->sent = 0; continue; }
            if (timed) { hist[hindex((t - c->t0) / 1000)]++; hcount++; }
            c->t0 = t; c->pos = 0; c->echoed = c->sent = 0;
            if (pp_push(c) < 0) goto dead;
            continue;
        dead:
            kill_conn(c);
            (*errors)++;
            if (mode == M_IDLE) pending--;
        }
    }
    if (mode == M_IDLE && pending)
        for (int i = 0; i < n; i++)
            if (cs[i].state == C_OPEN && cs[i].sent) { kill_conn(&cs[i]); (*errors)++; }
    return msgs;
}

int main(int argc, char **argv) {
    if (argc < 7) {
        fprintf(stderr, "usage: %s pingpong|bulk|idle PORT PATH CONNS SIZE SECONDS [PID]\n", argv[0]);
        return 2;
    }
    mode = !strcmp(argv[1], "pingpong") ? M_PINGPONG : !strcmp(argv[1], "bulk") ? M_BULK
         : !strcmp(argv[1], "idle") ? M_IDLE : -1;
    if (mode < 0) { fprintf(stderr, "wsload: unknown mode %s\n", argv[1]); return 2; }
    int port = atoi(argv[2]), n = atoi(argv[4]), pid = argc > 7 ? atoi(argv[7]) : 0;
    const char *path = argv[3];
    size_t size = (size_t)atol(argv[5]);
    double secs = atof(argv[6]);
    window = (uint64_t)env_num("WSLOAD_WINDOW", 1 << 20);
    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    if (!getrlimit(RLIMIT_NOFILE, &rl)) { rl.rlim_cur = rl.rlim_max; setrlimit(RLIMIT_NOFILE, &rl); }
    if ((rlim_t)n + 64 > rl.rlim_cur) { fprintf(stderr, "wsload: open-file limit %ld too low for %d conns\n", (long)rl.rlim_cur, n); return 2; }
    make_frames(size);
    ep = epoll_create1(EPOLL_CLOEXEC);
    struct conn *cs = calloc((size_t)n, sizeof *cs);
    const char *why = "";
    int failed = 0, errors = 0, nproc = 0;
    long rss0 = pid ? tree_rss_kib(pid, &nproc) : 0;
    uint64_t t_open = now_ns();
    int opened = open_all(cs, n, port, path, &failed, &why);
    double open_s = (double)(now_ns() - t_open) / 1e9;
    if (failed) fprintf(stderr, "wsload: %d handshake(s) failed, first: %s\n", failed, why);
    if (!opened) {
        printf("RESULT mode=%s conns=%d opened=0 hs_fail=%d error=\"%s\"\n", argv[1], n, failed, why);
        return 3;
    }

    if (mode == M_IDLE) {
        double settle = env_num("WSLOAD_SETTLE", 2);
        uint64_t t0 = now_ns();
        uint64_t ok1 = loop(cs, n, now_ns() + 10000000000ull, 1, 0, &errors);
        sleep_s(settle);
        long rss1 = pid ? tree_rss_kib(pid, &nproc) : 0;
        sleep_s(secs - (double)(now_ns() - t0) / 1e9);
        uint64_t ok2 = loop(cs, n, now_ns() + 10000000000ull, 1, 0, &errors);
        printf("RESULT mode=idle conns=%d opened=%d hs_fail=%d open_s=%.2f pid=%d procs=%d rss_before_kib=%ld "
               "rss_after_kib=%ld kib_per_conn=%.2f ping_ok=%llu alive=%llu errors=%d cpu_s=%.2f\n",
               n, opened, failed, open_s, pid, nproc, rss0, rss1, pid ? (double)(rss1 - rss0) / opened : 0.0,
               (unsigned long long)ok1, (unsigned long long)ok2, errors, cpu_seconds());
        return 0;
    }

    /* a short untimed warm-up, then the measured run */
    loop(cs, n, now_ns() + 300000000ull, 1, 0, &errors);
    uint64_t echoed0 = 0; /* bulk: count only what is echoed in the measured run */
    for (int i = 0; i < n; i++) echoed0 += cs[i].echoed;
    double cpu0 = cpu_seconds();
    uint64_t t0 = now_ns();
    uint64_t msgs = loop(cs, n, t0 + (uint64_t)(secs * 1e9), 0, 1, &errors);
    double el = (double)(now_ns() - t0) / 1e9, cpu = cpu_seconds() - cpu0;
    if (mode == M_PINGPONG) {
        printf("RESULT mode=pingpong conns=%d opened=%d hs_fail=%d size=%zu frame=%zu seconds=%.2f msgs=%llu "
               "msgs_per_s=%.1f p50_us=%.1f p90_us=%.1f p99_us=%.1f p999_us=%.1f errors=%d cpu_s=%.2f cpu_pct=%.0f\n",
               n, opened, failed, size, frame_len, el, (unsigned long long)msgs, (double)msgs / el, percentile(50),
               percentile(90), percentile(99), percentile(99.9), errors, cpu, 100 * cpu / el);
    } else {
        uint64_t echoed = 0;
        for (int i = 0; i < n; i++) echoed += cs[i].echoed;
        echoed -= echoed0;
        printf("RESULT mode=bulk conns=%d opened=%d hs_fail=%d size=%zu frame=%zu window=%llu seconds=%.2f "
               "echoed_bytes=%llu MiB_per_s=%.1f errors=%d cpu_s=%.2f cpu_pct=%.0f\n",
               n, opened, failed, size, frame_len, (unsigned long long)window, el, (unsigned long long)echoed,
               (double)echoed / el / 1048576.0, errors, cpu, 100 * cpu / el);
    }
    return errors ? 4 : 0;
}
