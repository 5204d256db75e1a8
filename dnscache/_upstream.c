/* The common cache miss, compiled: one upstream exchange per cache key (included by _fastpath.c).
 *
 * The hit path hands a miss here when the question is ordinary, nothing at all is cached under
 * its key, Python is not already resolving it, and Python has set a route (the upstream its
 * health ranking puts first, with that server's retransmit interval, RTO). The engine sends
 * the query from a fresh connected socket (the kernel picks a random source port and drops
 * datagrams from anywhere else) with a random ID from getrandom(2), and queues later clients
 * asking the same key behind it. A reply must carry the ID, QR and exactly the question asked
 * (case-exact under 0x20); anything else is counted as spoofed and the wait goes on, as in
 * dnscache.transport.
 *
 * A reply the engine can cache alone (NOERROR with the question's records only, or a negative
 * answer with a SOA; no TC, no CNAME chain, the OPT last) becomes a CacheEntry built here
 * byte-for-byte as dnscache.core.response.build_entry builds it, and the waiting clients are
 * answered at once. Everything else goes back to Python, which decides as it always does:
 * other replies (with the reply itself, so nothing is asked twice), send and socket errors,
 * and a flight with no reply after the RTO (its clients then continue on a Python flight; the
 * exchange itself runs on to the attempt timeout so its outcome still teaches the upstream's
 * health). Python learns every outcome through one call per wake-up (on_done).
 *
 * Like the hit path this parses untrusted bytes: every offset is checked before it is read.
 */
#include <netdb.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/timerfd.h>
#include <unistd.h>

#define MAX_WAITERS 4096   /* clients queued on one flight; more go to Python */
#define MAX_FLIGHTS 4096   /* flights at once (with the ones past their RTO); more go to Python */
#define MAX_RECORDS 256    /* records in a reply the engine caches alone */
#define MAX_BUCKETS 32
#define REPLY_SIZE 65536
#define TIMER_EVENT UINT64_MAX

/* what on_done receives: (kind, route, rtt, key, payload, waiters, query) */
enum { DONE_OK, DONE_REPLY, DONE_ERROR, DONE_HANDOVER, DONE_LATE };
/* counters (array('Q')): what Python adds into its statistics */
enum { C_MISSES, C_COALESCED, C_SPOOFED, C_UNSENT, C_STARTED, C_ANSWERED, N_COUNTERS };

typedef struct {
    PyObject *data; /* the client's datagram */
    struct sockaddr_storage peer;
    socklen_t peerlen;
    int fd; /* the listening socket it came in on */
    int limit;
    Py_ssize_t qend;
    double arrived;
} waiter_t;

typedef struct {
    int live; /* 0: slot free (the table is calloc'd: free slots cost no resident memory) */
    int sock;
    uint32_t gen;
    int handed; /* its clients went to Python at the RTO: only the outcome is left */
    int route;
    PyObject *key;
    unsigned char query[MAX_NAME_LEN + 32];
    int query_len;
    int qname_len; /* with the root octet */
    double sent, handover_at, timeout_at;
    int nwaiters, capacity;
    waiter_t *waiters; /* grown as clients queue, kept for the slot's next flight */
} flight_t;

typedef struct {
    double min_ttl, max_ttl, neg_max_ttl, stale_window, prefetch_fraction;
    int minimal; /* positive answers without authority and additional records (unless DO) */
} policy_t;

typedef struct {
    PyObject_HEAD
    int epfd, tfd, open;
    double armed; /* the timer's deadline; 0: not set */
    flight_t *flights;
    int *free_stack, nfree, high; /* slots below high may be in use */
    int waiting;                 /* flights with clients */
    PyObject *keys;              /* key -> slot (int) */
    PyObject *python_inflight;   /* the resolver's flights by key: those are Python's */
    PyObject *entry_type, *on_done, *zones, *results;
    int route; /* -1: none (Python resolves every miss) */
    struct sockaddr_storage route_addr;
    socklen_t route_len;
    double rto, timeout;
    int case_exact;
    policy_t policy;
    double buckets[MAX_BUCKETS];
    int nbuckets;
    PyObject *counters_obj, *durations_obj, *rcodes_obj;
    Py_buffer counters, durations, rcodes;
    unsigned char random[512];
    int random_left;
    unsigned char *reply;
} Engine;

static PyTypeObject EngineType;

static double monotonic_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t *counter(Engine *e) { return (uint64_t *)e->counters.buf; }

static int random_bytes(Engine *e, unsigned char *out, int n) {
    while (n > 0) {
        if (e->random_left == 0) {
            ssize_t got = getrandom(e->random, sizeof e->random, 0);
            if (got <= 0)
                return -1;
            e->random_left = (int)got;
        }
        int take = n < e->random_left ? n : e->random_left;
        memcpy(out, e->random + sizeof e->random - e->random_left, (size_t)take);
        e->random_left -= take;
        out += take;
        n -= take;
    }
    return 0;
}

/* -- the reply walker and the entry builder ------------------------------------------------ */

static unsigned char lower(unsigned char c) { return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c; }

/* Walk the (possibly compressed) name at off as dnscache.core.wire.read_name does, rejecting
 * what it rejects. *end gets the offset after the name as it sits at off. If cmp is given (an
 * uncompressed, lower-cased name with its root octet, cmplen octets), returns 1 when the name
 * equals it ignoring ASCII case, else 0; -1 for a malformed name. */
static int walk_name(const unsigned char *b, Py_ssize_t n, Py_ssize_t off, const unsigned char *cmp,
                     Py_ssize_t cmplen, Py_ssize_t *end) {
    Py_ssize_t stop = -1, p = 0;
    int hops = 0, total = 1, same = 1;
    for (;;) {
        if (off >= n)
            return -1;
        unsigned char len = b[off];
        if (len == 0) {
            off += 1;
            break;
        }
        if ((len & 0xC0) == 0xC0) {
            if (off + 1 >= n)
                return -1;
            Py_ssize_t target = ((Py_ssize_t)(len & 0x3F) << 8) | b[off + 1];
            if (stop < 0)
                stop = off + 2;
            if (++hops > 64 || target >= off)
                return -1;
            off = target;
            continue;
        }
        if (len & 0xC0)
            return -1;
        total += len + 1;
        if (total > MAX_NAME_LEN || off + 1 + len > n)
            return -1;
        if (cmp != NULL && same) {
            if (p + 1 + len >= cmplen || cmp[p] != len)
                same = 0;
            else
                for (int i = 1; i <= len; i++)
                    if (lower(b[off + i]) != cmp[p + i]) {
                        same = 0;
                        break;
                    }
            p += 1 + len;
        }
        off += 1 + len;
    }
    *end = stop >= 0 ? stop : off;
    return cmp != NULL && same && p == cmplen - 1 && cmp[p] == 0;
}

static uint16_t be16(const unsigned char *p) { return (uint16_t)((p[0] << 8) | p[1]); }
static uint32_t be32(const unsigned char *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

typedef struct {
    uint16_t ttl_off, end;
    uint32_t ttl;
} row_t;

static double clamp(double v, double lo, double hi) { return v < lo ? lo : v > hi ? hi : v; }

/* seconds as the header's whole milliseconds: dnscache.core.cache.to_ms, the same arithmetic */
static uint32_t to_ms(double seconds) {
    double v = seconds * 1000.0 + 0.5;
    return v <= 0 ? 0 : v >= 4294967295.0 ? UINT32_MAX : (uint32_t)v;
}

/* Build the cache entry for reply r (n octets) to the question key (lower-cased name with its
 * root octet, type, class, variant byte), as dnscache.core.response.build_entry does after
 * check_reply and scrub. The caller has checked the ID and QR. Returns 1 with
 * *entry set, 0 when Python must decide (an rcode, a shape or a size this does not cache alone,
 * or another question), -1 with an exception set. */
static int entry_from_reply(const unsigned char *r, Py_ssize_t n, const unsigned char *key,
                            Py_ssize_t keylen, const policy_t *pol, double now, PyObject *entry_type,
                            PyObject **entry) {
    Py_ssize_t qlen = keylen - 5;
    Py_ssize_t qend = 12 + qlen + 4;
    if (n < qend || r[4] != 0 || r[5] != 1 || memcmp(r + qend - 4, key + qlen, 4) != 0)
        return 0;
    for (Py_ssize_t i = 12; i < qend - 4; i++)
        if (lower(r[i]) != key[i - 12])
            return 0; /* not this key's question (the caller checks too: this is the builder's own) */
    uint16_t flags = be16(r + 2);
    int rcode = flags & 0xF;
    if ((flags & 0x0200) || (rcode != 0 && rcode != 3))
        return 0; /* TC, or an rcode whose verdict is Python's */
    uint16_t qtype = be16(key + qlen);
    unsigned char variant = key[keylen - 1];
    int counts[3] = {be16(r + 6), be16(r + 8), be16(r + 10)};
    int kept[3] = {0, 0, 0};
    static row_t rows[MAX_RECORDS];
    int nrows = 0, has_data = 0, soa = -1;
    uint32_t soa_ttl = 0, soa_minimum = 0;
    Py_ssize_t off = qend, opt_start = -1, answers_end = qend;
    for (int section = 0; section < 3; section++) {
        if (section == 1)
            answers_end = off;
        for (int i = 0; i < counts[section]; i++) {
            Py_ssize_t start = off, after;
            int same = walk_name(r, n, off, section == 0 ? key : NULL, qlen, &after);
            if (same < 0 || after + 10 > n)
                return 0;
            uint16_t rtype = be16(r + after);
            uint32_t ttl = be32(r + after + 4);
            Py_ssize_t rdata = after + 10, end = rdata + be16(r + after + 8);
            if (end > n)
                return 0;
            off = end;
            if (rtype == 41) { /* OPT: the last record, at the root, with no extended rcode */
                if (section != 2 || opt_start >= 0 || r[start] != 0 || end != n || (ttl >> 24))
                    return 0;
                opt_start = start;
                continue;
            }
            if (nrows == MAX_RECORDS || end > 65535)
                return 0;
            if (ttl & 0x80000000u)
                ttl = 0;
            if (section == 0) { /* scrub keeps the question's own records (and signatures) */
                if (!same || (rtype != qtype && rtype != 46))
                    return 0;
                has_data |= rtype == qtype;
            } else if (section == 1 && rtype == 6 && soa < 0) {
                if (end - rdata < 22)
                    return 0;
                soa = nrows;
                soa_ttl = ttl;
                soa_minimum = be32(r + end - 4);
            }
            rows[nrows].ttl_off = (uint16_t)(after + 4);
            rows[nrows].end = (uint16_t)end;
            rows[nrows].ttl = (uint32_t)clamp((double)ttl, pol->min_ttl, pol->max_ttl);
            kept[section]++;
            nrows++;
        }
    }
    if (off != n)
        return 0; /* trailing octets: malformed */
    if (qtype == 255 || qtype == 5)
        return 0; /* ANY and CNAME questions: Python's rules */
    int edns = variant & 1, do_bit = (variant & 2) != 0;
    Py_ssize_t body_end = opt_start >= 0 ? opt_start : n;
    if (pol->minimal && !do_bit && rcode == 0 && has_data) {
        /* as build_entry: the answers only (they come first, and pointers point backwards) */
        nrows = kept[0];
        kept[1] = kept[2] = 0;
        body_end = answers_end;
    }
    double lifetime;
    if (rcode == 0 && has_data) {
        uint32_t least = UINT32_MAX;
        for (int i = 0; i < nrows; i++)
            if (rows[i].ttl < least)
                least = rows[i].ttl;
        lifetime = nrows ? (double)least : 0.0;
    } else {
        if (soa < 0)
            return 0; /* not cached (RFC 2308 5): Python answers it */
        double negative = clamp((double)(soa_ttl < soa_minimum ? soa_ttl : soa_minimum), pol->min_ttl,
                                pol->neg_max_ttl);
        rows[soa].ttl = (uint32_t)negative;
        lifetime = negative;
        for (int i = 0; i < kept[0]; i++)
            if (rows[i].ttl < lifetime)
                lifetime = rows[i].ttl;
    }
    Py_ssize_t wire_len = body_end + (edns ? 11 : 0);
    Py_ssize_t start = META_SIZE + (Py_ssize_t)nrows * ROW_SIZE;
    if (start + wire_len > 65535 + META_SIZE)
        return 0;
    *entry = PyObject_CallFunction(entry_type, "n", start + wire_len);
    if (*entry == NULL)
        return -1;
    if (!PyByteArray_Check(*entry) || PyByteArray_GET_SIZE(*entry) != start + wire_len) {
        Py_CLEAR(*entry);
        PyErr_SetString(PyExc_TypeError, "the entry type must make a bytearray of the size given");
        return -1;
    }
    unsigned char *e = (unsigned char *)PyByteArray_AS_STRING(*entry);
    /* header: "=dIIIIiBBHHHHHH" (dnscache.core.cache._META) */
    uint32_t ms[4] = {to_ms(lifetime), to_ms(lifetime * (1.0 - pol->prefetch_fraction)),
                      to_ms(lifetime + pol->stale_window), 0};
    int32_t age = 0;
    uint16_t u16[6] = {(uint16_t)start, (uint16_t)nrows, (uint16_t)kept[0], (uint16_t)kept[1],
                       (uint16_t)kept[2], (uint16_t)qend};
    memcpy(e + OFF_STORED, &now, 8);
    memcpy(e + OFF_EXPIRES_MS, ms, sizeof ms);
    memcpy(e + OFF_AGE, &age, 4);
    e[OFF_HITS] = e[OFF_REFERENCED] = 0;
    memcpy(e + OFF_WIRE_START, u16, sizeof u16);
    for (int i = 0; i < nrows; i++) { /* rows "=HIH" */
        unsigned char *row = e + META_SIZE + (Py_ssize_t)i * ROW_SIZE;
        memcpy(row, &rows[i].ttl_off, 2);
        memcpy(row + 2, &rows[i].ttl, 4);
        memcpy(row + 6, &rows[i].end, 2);
    }
    unsigned char *w = e + start;
    uint16_t out_flags = 0x8000 | 0x0080 | (flags & 0xF);
    if (do_bit && (flags & 0x0020))
        out_flags |= 0x0020;
    if (variant & 4)
        out_flags |= 0x0010;
    int ar = kept[2] + (edns ? 1 : 0);
    unsigned char head[12] = {0, 0, (unsigned char)(out_flags >> 8), (unsigned char)out_flags, 0, 1,
                              (unsigned char)(kept[0] >> 8), (unsigned char)kept[0],
                              (unsigned char)(kept[1] >> 8), (unsigned char)kept[1],
                              (unsigned char)(ar >> 8), (unsigned char)ar};
    memcpy(w, head, 12);
    for (Py_ssize_t i = 12; i < qend - 4; i++)
        w[i] = lower(r[i]);
    memcpy(w + qend - 4, r + qend - 4, (size_t)(body_end - (qend - 4)));
    if (edns) {
        static const unsigned char opt[11] = {0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0, 0, 0};
        memcpy(w + body_end, opt, 11);
        if (do_bit)
            w[body_end + 7] = 0x80;
    }
    for (int i = 0; i < nrows; i++)
        store_be32(w + rows[i].ttl_off, rows[i].ttl);
    return 1;
}

PyDoc_STRVAR(entry_from_reply_doc,
"entry_from_reply(reply, key, policy, now, entry_type) -> entry or None\n\n"
"The entry the miss engine builds for reply (already matched to key's question), or None where\n"
"Python decides. policy: (min_ttl, max_ttl, neg_max_ttl, stale_window, prefetch_fraction,\n"
"minimal_responses). For\n"
"differential tests against dnscache.core.response.build_entry.");

static PyObject *py_entry_from_reply(PyObject *self, PyObject *args) {
    Py_buffer reply, key;
    policy_t pol;
    double now;
    PyObject *entry_type, *entry = NULL;
    if (!PyArg_ParseTuple(args, "y*y*(dddddp)dO", &reply, &key, &pol.min_ttl, &pol.max_ttl,
                          &pol.neg_max_ttl, &pol.stale_window, &pol.prefetch_fraction, &pol.minimal, &now,
                          &entry_type))
        return NULL;
    int r = key.len >= 6 ? entry_from_reply(reply.buf, reply.len, key.buf, key.len, &pol, now,
                                            entry_type, &entry)
                         : 0;
    PyBuffer_Release(&reply);
    PyBuffer_Release(&key);
    if (r < 0)
        return NULL;
    if (r == 0)
        Py_RETURN_NONE;
    return entry;
}

/* -- flights ------------------------------------------------------------------------------- */

static void observe(Engine *e, double seconds) {
    uint64_t *d = (uint64_t *)e->durations.buf;
    int i = 0;
    while (i < e->nbuckets && seconds > e->buckets[i])
        i++;
    d[i]++;
    double sum;
    memcpy(&sum, d + e->nbuckets + 1, 8);
    sum += seconds;
    memcpy(d + e->nbuckets + 1, &sum, 8);
}

/* Append waiter w to list as Python sees it: (datagram, address, fd, question end, limit,
 * arrival time). -1 with an exception set. */
static int append_waiter(PyObject *list, const waiter_t *w) {
    PyObject *addr = address_tuple(&w->peer);
    PyObject *t = addr ? Py_BuildValue("(OOinid)", w->data, addr, w->fd, w->qend, w->limit, w->arrived)
                       : NULL;
    Py_XDECREF(addr);
    int r = t == NULL ? -1 : PyList_Append(list, t);
    Py_XDECREF(t);
    return r;
}

/* The waiters of f whose limit an answer of wlen octets fits (fits 1) or exceeds (fits 0); all
 * of them for wlen < 0. */
static PyObject *waiters_list(const flight_t *f, Py_ssize_t wlen, int fits) {
    PyObject *list = PyList_New(0);
    for (int i = 0; list != NULL && i < f->nwaiters; i++) {
        const waiter_t *w = &f->waiters[i];
        if (wlen >= 0 && (wlen <= w->limit && wlen <= OUT_SIZE) != fits)
            continue;
        if (append_waiter(list, w) < 0)
            Py_CLEAR(list);
    }
    return list;
}

static void drop_waiters(flight_t *f) {
    for (int i = 0; i < f->nwaiters; i++)
        Py_CLEAR(f->waiters[i].data);
    f->nwaiters = 0;
}

/* Queue an outcome for on_done; steals nothing. Returns -1 with an exception set. */
static int report(Engine *e, int kind, flight_t *f, double rtt, PyObject *payload, PyObject *waiters) {
    PyObject *query = PyBytes_FromStringAndSize((const char *)f->query, f->query_len);
    PyObject *t = query ? Py_BuildValue("(iidOOOO)", kind, f->route, rtt, f->key ? f->key : Py_None,
                                        payload ? payload : Py_None, waiters ? waiters : Py_None, query)
                        : NULL;
    Py_XDECREF(query);
    if (t == NULL)
        return -1;
    int r = PyList_Append(e->results, t);
    Py_DECREF(t);
    return r;
}

static void unkey(Engine *e, flight_t *f) {
    if (f->key == NULL)
        return;
    PyObject *slot = PyDict_GetItemWithError(e->keys, f->key);
    if (slot != NULL && PyLong_AsLong(slot) == f - e->flights)
        PyDict_DelItem(e->keys, f->key);
    PyErr_Clear();
}

static void release(Engine *e, flight_t *f) {
    if (f->live)
        close(f->sock); /* leaves the epoll set with it */
    f->live = 0;
    if (!f->handed && f->nwaiters)
        e->waiting--;
    drop_waiters(f);
    unkey(e, f);
    Py_CLEAR(f->key);
    e->free_stack[e->nfree++] = (int)(f - e->flights);
}

/* Clients that go to Python (a handover, an error, a reply Python decides) */
static int hand_over(Engine *e, flight_t *f, int kind, double rtt, PyObject *payload) {
    PyObject *waiters = waiters_list(f, -1, 0);
    if (waiters == NULL)
        return -1;
    int r = report(e, kind, f, rtt, payload, waiters);
    Py_DECREF(waiters);
    if (!f->handed && f->nwaiters)
        e->waiting--;
    drop_waiters(f);
    f->handed = 1;
    unkey(e, f);
    return r;
}

static void arm(Engine *e, double when) {
    if (e->armed != 0.0 && e->armed <= when)
        return;
    struct itimerspec its;
    memset(&its, 0, sizeof its);
    if (when < 1e-6)
        when = 1e-6;
    its.it_value.tv_sec = (time_t)when;
    its.it_value.tv_nsec = (long)((when - (double)its.it_value.tv_sec) * 1e9);
    if (timerfd_settime(e->tfd, TFD_TIMER_ABSTIME, &its, NULL) == 0)
        e->armed = when;
}

/* Answer the clients queued on f from entry; the ones whose limit it exceeds go to Python. */
static int answer_waiters(Engine *e, flight_t *f, PyObject *entry, double now, PyObject **over) {
    unsigned char *en = (unsigned char *)PyByteArray_AS_STRING(entry);
    Py_ssize_t len = PyByteArray_GET_SIZE(entry);
    uint16_t start;
    memcpy(&start, en + OFF_WIRE_START, 2);
    Py_ssize_t wlen = len - start;
    unsigned char out[OUT_SIZE];
    uint64_t *rc = (uint64_t *)e->rcodes.buf;
    int first_over = -1;
    for (int i = 0; i < f->nwaiters; i++) {
        waiter_t *w = &f->waiters[i];
        if (wlen > w->limit || wlen > OUT_SIZE) {
            if (first_over < 0)
                first_over = i;
            continue;
        }
        const unsigned char *d = (const unsigned char *)PyBytes_AS_STRING(w->data);
        memcpy(out, en + start, (size_t)wlen);
        out[0] = d[0];
        out[1] = d[1];
        out[2] = (unsigned char)((out[2] & 0xFE) | (d[2] & 0x01));
        memcpy(out + 12, d + 12, (size_t)(w->qend - 4 - 12));
        if (sendto(w->fd, out, (size_t)wlen, MSG_DONTWAIT, (struct sockaddr *)&w->peer, w->peerlen) < 0)
            counter(e)[C_UNSENT]++;
        else
            counter(e)[C_ANSWERED]++;
        rc[out[3] & 0xF]++;
        observe(e, now - w->arrived);
    }
    if (first_over >= 0) {
        PyObject *list = waiters_list(f, wlen, 0);
        if (list == NULL)
            return -1;
        *over = list;
    }
    return 0;
}

/* Would dnscache.core.wire.parse_message accept r? (The verdict on a reply whose question is
 * not ours: spoofed if it parses, Python's MALFORMED or REFUSED if it does not.) */
static int message_parses(const unsigned char *r, Py_ssize_t n) {
    static const unsigned char root[1] = {0};
    Py_ssize_t off;
    if (n < 12 || r[4] != 0 || r[5] != 1 || walk_name(r, n, 12, NULL, 0, &off) < 0 || off + 4 > n)
        return 0;
    off += 4;
    int opt = 0;
    for (int section = 0; section < 3; section++) {
        int count = be16(r + 6 + 2 * section);
        for (int i = 0; i < count; i++) {
            Py_ssize_t after;
            int at_root = walk_name(r, n, off, root, 1, &after);
            if (at_root < 0 || after + 10 > n)
                return 0;
            Py_ssize_t end = after + 10 + be16(r + after + 8);
            if (end > n)
                return 0;
            if (be16(r + after) == 41) {
                if (section != 2 || opt || !at_root)
                    return 0;
                opt = 1;
            }
            off = end;
        }
    }
    return off == n;
}

/* Is the question in the reply exactly the one asked (ignoring ASCII case unless 0x20)? */
static int question_matches(const Engine *e, const flight_t *f, const unsigned char *r, Py_ssize_t n) {
    Py_ssize_t qend = 12 + f->qname_len + 4;
    if (n < qend || r[4] != 0 || r[5] != 1 || memcmp(r + qend - 4, f->query + qend - 4, 4) != 0)
        return 0;
    if (e->case_exact)
        return memcmp(r + 12, f->query + 12, (size_t)f->qname_len) == 0;
    for (Py_ssize_t i = 12; i < qend - 4; i++)
        if (lower(r[i]) != lower(f->query[i]))
            return 0;
    return 1;
}

/* One datagram on f's socket (in e->reply). 0: not the reply, keep waiting; 1: f is done. */
static int on_datagram(Engine *e, flight_t *f, Py_ssize_t n, double now) {
    const unsigned char *r = e->reply;
    double rtt = now - f->sent;
    if (n < 12 || r[0] != f->query[0] || r[1] != f->query[1] || !(r[2] & 0x80)) {
        counter(e)[C_SPOOFED]++;
        return 0;
    }
    int ours = question_matches(e, f, r, n);
    if (!ours && message_parses(r, n)) {
        counter(e)[C_SPOOFED]++; /* a well-formed reply to another question */
        return 0;
    }
    PyObject *bytes = NULL, *entry = NULL;
    int built = 0;
    if (!f->handed && ours) {
        built = entry_from_reply(r, n, (const unsigned char *)PyBytes_AS_STRING(f->key),
                                 PyBytes_GET_SIZE(f->key), &e->policy, now, e->entry_type, &entry);
        if (built < 0)
            return -1;
    }
    int status;
    if (built == 1) {
        PyObject *over = NULL;
        status = answer_waiters(e, f, entry, now, &over);
        if (status == 0)
            status = report(e, DONE_OK, f, rtt, entry, over);
        Py_XDECREF(over);
        Py_DECREF(entry);
        e->waiting--;
        f->handed = 1; /* answered (and counted out of waiting): release() drops the rest */
    } else {
        bytes = PyBytes_FromStringAndSize((const char *)r, n);
        if (bytes == NULL)
            return -1;
        status = f->handed ? report(e, DONE_LATE, f, rtt, bytes, NULL)
                           : hand_over(e, f, DONE_REPLY, rtt, bytes);
        Py_DECREF(bytes);
    }
    release(e, f);
    return status < 0 ? -1 : 1;
}

static int on_readable(Engine *e, flight_t *f, double now) {
    for (;;) {
        ssize_t k = recv(f->sock, e->reply, REPLY_SIZE, 0);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            /* ICMP unreachable and the like: a network error, Python's to decide on */
            PyObject *outcome = PyUnicode_FromString("network_error");
            if (outcome == NULL)
                return -1;
            int status = f->handed ? report(e, DONE_LATE, f, now - f->sent, outcome, NULL)
                                   : hand_over(e, f, DONE_ERROR, now - f->sent, outcome);
            Py_DECREF(outcome);
            release(e, f);
            return status;
        }
        int r = on_datagram(e, f, (Py_ssize_t)k, now);
        if (r != 0)
            return r < 0 ? -1 : 0;
    }
}

/* Flights past their RTO hand their clients to Python; past the attempt timeout they end. */
static int expire(Engine *e, double now) {
    double next = 0.0;
    int status = 0;
    for (int i = 0; i < e->high && status == 0; i++) {
        flight_t *f = &e->flights[i];
        if (!f->live)
            continue;
        if (!f->handed && now >= f->handover_at)
            status = hand_over(e, f, DONE_HANDOVER, now - f->sent, NULL);
        if (status == 0 && f->handed && now >= f->timeout_at) {
            PyObject *outcome = PyUnicode_FromString("timeout");
            status = outcome ? report(e, DONE_LATE, f, now - f->sent, outcome, NULL) : -1;
            Py_XDECREF(outcome);
            release(e, f);
            continue;
        }
        double due = f->handed ? f->timeout_at : f->handover_at;
        if (next == 0.0 || due < next)
            next = due;
    }
    e->armed = 0.0;
    if (next != 0.0) {
        arm(e, next);
    } else {
        struct itimerspec off;
        memset(&off, 0, sizeof off);
        timerfd_settime(e->tfd, 0, &off, NULL);
    }
    return status;
}

static PyObject *flush(Engine *e) {
    if (PyList_GET_SIZE(e->results) == 0)
        Py_RETURN_NONE;
    PyObject *results = e->results;
    e->results = PyList_New(0);
    if (e->results == NULL) {
        e->results = results;
        return NULL;
    }
    PyObject *out = PyObject_CallOneArg(e->on_done, results);
    Py_DECREF(results);
    if (out == NULL)
        return NULL;
    Py_DECREF(out);
    Py_RETURN_NONE;
}

static PyObject *engine_call(Engine *e, PyObject *args, PyObject *kwds) {
    if (!e->open)
        Py_RETURN_NONE;
    double now = monotonic_now();
    struct epoll_event events[64];
    int n = epoll_wait(e->epfd, events, 64, 0);
    int timer = 0, status = 0;
    for (int i = 0; i < n && status == 0; i++) {
        uint64_t tag = events[i].data.u64;
        if (tag == TIMER_EVENT) {
            uint64_t expirations;
            if (read(e->tfd, &expirations, sizeof expirations) < 0) {
                /* nothing to read: a wake-up that an earlier call already took */
            }
            timer = 1;
            continue;
        }
        uint32_t slot = (uint32_t)tag, gen = (uint32_t)(tag >> 32);
        if (slot >= MAX_FLIGHTS)
            continue;
        flight_t *f = &e->flights[slot];
        if (f->live && f->gen == gen)
            status = on_readable(e, f, now);
    }
    if (status == 0 && (timer || (e->armed != 0.0 && now >= e->armed)))
        status = expire(e, now);
    if (status < 0) {
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        PyObject *out = flush(e); /* what was done before the failure still reaches Python */
        Py_XDECREF(out);
        PyErr_Restore(type, value, tb);
        return NULL;
    }
    return flush(e);
}

static int under_zone(PyObject *zones, const unsigned char *name, Py_ssize_t len) {
    for (Py_ssize_t z = 0; z < PyTuple_GET_SIZE(zones); z++) {
        PyObject *zone = PyTuple_GET_ITEM(zones, z);
        Py_ssize_t zl = PyBytes_GET_SIZE(zone);
        const char *zb = PyBytes_AS_STRING(zone);
        for (Py_ssize_t i = 0; i < len; i += name[i] + 1) {
            if (len - i == zl && memcmp(name + i, zb, (size_t)zl) == 0)
                return 1;
            if (name[i] == 0)
                break;
        }
    }
    return 0;
}

/* From the hit path: take this miss (1), or leave it to Python (0); -1 with an exception. key is
 * the cache key built from d, under which nothing is cached. */
static int engine_take(Engine *e, PyObject *key, const unsigned char *d, Py_ssize_t n,
                       const question_t *q, const struct sockaddr_storage *peer, socklen_t peerlen,
                       int fd, double now) {
    if (!e->open || e->route < 0)
        return 0;
    uint16_t qtype = be16(d + q->qend - 4), qclass = be16(d + q->qend - 2);
    /* only what is forwarded (dnscache.core.wire.local_rcode) and cached by the rules here */
    if (qclass != 1 || qtype == 0 || qtype == 5 || qtype == 41 || qtype >= 128)
        return 0;
    const unsigned char *name = (const unsigned char *)PyBytes_AS_STRING(key);
    Py_ssize_t qname_len = q->qend - 4 - 12;
    if (PyTuple_GET_SIZE(e->zones) && under_zone(e->zones, name, qname_len))
        return 0;
    int python = PyDict_Contains(e->python_inflight, key);
    if (python != 0)
        return python < 0 ? -1 : 0;
    PyObject *slot = PyDict_GetItemWithError(e->keys, key);
    flight_t *f;
    if (slot != NULL) {
        f = &e->flights[PyLong_AsLong(slot)];
        if (f->nwaiters >= MAX_WAITERS)
            return 0;
        counter(e)[C_COALESCED]++;
    } else {
        if (PyErr_Occurred())
            return -1;
        if (e->nfree == 0)
            return 0;
        int idx = e->free_stack[e->nfree - 1];
        f = &e->flights[idx];
        /* the query: random ID, RD, CD as asked, the name (0x20: letters in random case), EDNS */
        unsigned char *qb = f->query;
        if (random_bytes(e, qb, 2) < 0)
            return 0;
        qb[2] = 0x01;
        qb[3] = (q->variant & 4) ? 0x10 : 0;
        static const unsigned char counts[8] = {0, 1, 0, 0, 0, 0, 0, 1};
        memcpy(qb + 4, counts, 8);
        memcpy(qb + 12, name, (size_t)qname_len);
        if (e->case_exact) {
            unsigned char bits[MAX_NAME_LEN / 8 + 2];
            if (random_bytes(e, bits, (int)(qname_len / 8 + 1)) < 0)
                return 0;
            for (Py_ssize_t i = 0; i < qname_len; i++)
                if (qb[12 + i] >= 'a' && qb[12 + i] <= 'z' && ((bits[i / 8] >> (i % 8)) & 1))
                    qb[12 + i] = (unsigned char)(qb[12 + i] - 32);
        }
        unsigned char *p = qb + 12 + qname_len;
        memcpy(p, d + q->qend - 4, 4);
        static const unsigned char opt[11] = {0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0, 0, 0};
        memcpy(p + 4, opt, 11);
        if (q->variant & 2)
            p[4 + 7] = 0x80;
        f->query_len = (int)(12 + qname_len + 4 + 11);
        f->qname_len = (int)qname_len;
        int sock = socket(e->route_addr.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (sock < 0)
            return 0;
        struct epoll_event ev = {.events = EPOLLIN};
        uint32_t gen = f->gen + 1;
        ev.data.u64 = ((uint64_t)gen << 32) | (uint32_t)idx;
        if (connect(sock, (struct sockaddr *)&e->route_addr, e->route_len) < 0 ||
            send(sock, qb, (size_t)f->query_len, 0) != f->query_len ||
            epoll_ctl(e->epfd, EPOLL_CTL_ADD, sock, &ev) < 0) {
            close(sock);
            return 0; /* Python resolves it, and meets (and records) the same failure */
        }
        PyObject *index = PyLong_FromLong(idx);
        if (index == NULL || PyDict_SetItem(e->keys, key, index) < 0) {
            Py_XDECREF(index);
            close(sock);
            return -1;
        }
        Py_DECREF(index);
        e->nfree--;
        if (idx + 1 > e->high)
            e->high = idx + 1;
        f->live = 1;
        f->sock = sock;
        f->gen = gen;
        f->handed = 0;
        f->route = e->route;
        f->key = Py_NewRef(key);
        f->sent = now;
        f->handover_at = now + e->rto;
        f->timeout_at = now + e->timeout;
        f->nwaiters = 0;
        e->waiting++;
        counter(e)[C_STARTED]++;
        arm(e, f->handover_at);
    }
    if (f->nwaiters == f->capacity) {
        int capacity = f->capacity ? f->capacity * 2 : 4;
        waiter_t *grown = PyMem_Realloc(f->waiters, (size_t)capacity * sizeof(waiter_t));
        if (grown == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        f->waiters = grown;
        f->capacity = capacity;
    }
    waiter_t *w = &f->waiters[f->nwaiters];
    w->data = PyBytes_FromStringAndSize((const char *)d, n);
    if (w->data == NULL)
        return -1;
    memcpy(&w->peer, peer, sizeof *peer);
    w->peerlen = peerlen;
    w->fd = fd;
    w->limit = q->limit;
    w->qend = q->qend;
    w->arrived = now;
    f->nwaiters++;
    counter(e)[C_MISSES]++;
    return 1;
}

/* -- the Engine type ----------------------------------------------------------------------- */

static int engine_traverse(Engine *e, visitproc visit, void *arg) {
    Py_VISIT(e->keys);
    Py_VISIT(e->python_inflight);
    Py_VISIT(e->entry_type);
    Py_VISIT(e->on_done);
    Py_VISIT(e->zones);
    Py_VISIT(e->results);
    return 0;
}

static void engine_shutdown(Engine *e) {
    if (e->flights != NULL) {
        for (int i = 0; i < e->high; i++)
            if (e->flights[i].live)
                release(e, &e->flights[i]);
    }
    if (e->open) {
        e->open = 0;
        if (e->epfd >= 0)
            close(e->epfd);
        if (e->tfd >= 0)
            close(e->tfd);
        PyBuffer_Release(&e->counters);
        PyBuffer_Release(&e->durations);
        PyBuffer_Release(&e->rcodes);
    }
}

static int engine_clear(Engine *e) {
    engine_shutdown(e);
    Py_CLEAR(e->keys);
    Py_CLEAR(e->python_inflight);
    Py_CLEAR(e->entry_type);
    Py_CLEAR(e->on_done);
    Py_CLEAR(e->zones);
    Py_CLEAR(e->results);
    Py_CLEAR(e->counters_obj);
    Py_CLEAR(e->durations_obj);
    Py_CLEAR(e->rcodes_obj);
    return 0;
}

static void engine_dealloc(Engine *e) {
    PyObject_GC_UnTrack(e);
    engine_clear(e);
    if (e->flights != NULL)
        for (int i = 0; i < MAX_FLIGHTS; i++)
            PyMem_Free(e->flights[i].waiters);
    PyMem_Free(e->flights);
    PyMem_Free(e->free_stack);
    PyMem_Free(e->reply);
    Py_TYPE(e)->tp_free((PyObject *)e);
}

static int engine_init(Engine *e, PyObject *args, PyObject *kwds) {
    static char *names[] = {"python_inflight", "entry_type", "on_done", "counters", "durations",
                            "rcodes", "buckets", "policy", "case_exact", NULL};
    PyObject *inflight, *entry_type, *on_done, *counters, *durations, *rcodes, *buckets;
    policy_t pol;
    int case_exact;
    if (e->flights != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "an Engine is initialised once");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!OOOOOO(dddddp)p", names, &PyDict_Type, &inflight,
                                     &entry_type, &on_done, &counters, &durations, &rcodes, &buckets,
                                     &pol.min_ttl, &pol.max_ttl, &pol.neg_max_ttl, &pol.stale_window,
                                     &pol.prefetch_fraction, &pol.minimal, &case_exact))
        return -1;
    if (!PyCallable_Check(on_done) || !PyCallable_Check(entry_type)) {
        PyErr_SetString(PyExc_TypeError, "entry_type and on_done must be callable");
        return -1;
    }
    PyObject *seq = PySequence_Fast(buckets, "buckets must be a sequence of floats");
    if (seq == NULL)
        return -1;
    Py_ssize_t nb = PySequence_Fast_GET_SIZE(seq);
    if (nb > MAX_BUCKETS) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_ValueError, "too many buckets");
        return -1;
    }
    for (Py_ssize_t i = 0; i < nb; i++)
        e->buckets[i] = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(seq, i));
    Py_DECREF(seq);
    if (PyErr_Occurred())
        return -1;
    e->nbuckets = (int)nb;
    if (get_counters(counters, &e->counters, N_COUNTERS) < 0)
        return -1;
    if (get_counters(durations, &e->durations, nb + 2) < 0) {
        PyBuffer_Release(&e->counters);
        return -1;
    }
    if (get_counters(rcodes, &e->rcodes, RCODE_SLOTS) < 0) {
        PyBuffer_Release(&e->counters);
        PyBuffer_Release(&e->durations);
        return -1;
    }
    e->open = 1; /* from here on a failure is undone by engine_shutdown */
    e->flights = PyMem_Calloc(MAX_FLIGHTS, sizeof(flight_t));
    e->free_stack = PyMem_Calloc(MAX_FLIGHTS, sizeof(int));
    e->reply = PyMem_Malloc(REPLY_SIZE);
    e->keys = PyDict_New();
    e->results = PyList_New(0);
    if (e->flights == NULL || e->free_stack == NULL || e->reply == NULL || e->keys == NULL ||
        e->results == NULL) {
        e->epfd = e->tfd = -1;
        engine_shutdown(e);
        PyErr_NoMemory();
        return -1;
    }
    e->epfd = epoll_create1(EPOLL_CLOEXEC);
    e->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = TIMER_EVENT};
    if (e->epfd < 0 || e->tfd < 0 || epoll_ctl(e->epfd, EPOLL_CTL_ADD, e->tfd, &ev) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        engine_shutdown(e);
        return -1;
    }
    for (int i = 0; i < MAX_FLIGHTS; i++)
        e->free_stack[i] = MAX_FLIGHTS - 1 - i; /* slot 0 first: the scans stay short */
    e->nfree = MAX_FLIGHTS;
    e->route = -1;
    e->policy = pol;
    e->case_exact = case_exact;
    e->python_inflight = Py_NewRef(inflight);
    e->entry_type = Py_NewRef(entry_type);
    e->on_done = Py_NewRef(on_done);
    e->zones = PyTuple_New(0);
    e->counters_obj = Py_NewRef(counters);
    e->durations_obj = Py_NewRef(durations);
    e->rcodes_obj = Py_NewRef(rcodes);
    return e->zones == NULL ? -1 : 0;
}

static PyObject *engine_set_route(Engine *e, PyObject *args) {
    int route;
    const char *host;
    int port;
    double rto, timeout;
    PyObject *zones;
    policy_t pol;
    if (!PyArg_ParseTuple(args, "isiddO!(dddddp)", &route, &host, &port, &rto, &timeout, &PyTuple_Type,
                          &zones, &pol.min_ttl, &pol.max_ttl, &pol.neg_max_ttl, &pol.stale_window,
                          &pol.prefetch_fraction, &pol.minimal))
        return NULL;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(zones); i++)
        if (!PyBytes_Check(PyTuple_GET_ITEM(zones, i))) {
            PyErr_SetString(PyExc_TypeError, "zones must be wire names (bytes)");
            return NULL;
        }
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_flags = AI_NUMERICHOST;
    hints.ai_socktype = SOCK_DGRAM;
    int rc = getaddrinfo(host, NULL, &hints, &res);
    if (rc != 0 || res == NULL || res->ai_addrlen > sizeof e->route_addr) {
        if (res != NULL)
            freeaddrinfo(res);
        PyErr_Format(PyExc_ValueError, "not a numeric address: %s", host);
        return NULL;
    }
    memcpy(&e->route_addr, res->ai_addr, res->ai_addrlen);
    e->route_len = (socklen_t)res->ai_addrlen;
    freeaddrinfo(res);
    if (e->route_addr.ss_family == AF_INET)
        ((struct sockaddr_in *)&e->route_addr)->sin_port = htons((uint16_t)port);
    else
        ((struct sockaddr_in6 *)&e->route_addr)->sin6_port = htons((uint16_t)port);
    Py_SETREF(e->zones, Py_NewRef(zones));
    e->route = route;
    e->policy = pol;
    e->rto = rto;
    e->timeout = timeout > rto ? timeout : rto;
    Py_RETURN_NONE;
}

static PyObject *engine_clear_route(Engine *e, PyObject *unused) {
    e->route = -1;
    Py_RETURN_NONE;
}

static PyObject *engine_fileno(Engine *e, PyObject *unused) {
    if (!e->open) {
        PyErr_SetString(PyExc_ValueError, "the engine is closed");
        return NULL;
    }
    return PyLong_FromLong(e->epfd);
}

static PyObject *engine_waiting(Engine *e, PyObject *unused) { return PyLong_FromLong(e->waiting); }

static PyObject *engine_close(Engine *e, PyObject *unused) {
    int dropped = 0;
    if (e->flights != NULL)
        for (int i = 0; i < e->high; i++)
            if (e->flights[i].live && !e->flights[i].handed)
                dropped += e->flights[i].nwaiters;
    engine_shutdown(e);
    return PyLong_FromLong(dropped);
}

static PyMethodDef engine_methods[] = {
    {"set_route", (PyCFunction)engine_set_route, METH_VARARGS,
     "set_route(route, host, port, rto, timeout, zones, policy): send new flights to host:port\n"
     "(Python's number for it: route), hand them back after rto seconds, end them after timeout;\n"
     "names under zones (lower-cased wire names) stay Python's; policy as for Engine."},
    {"clear_route", (PyCFunction)engine_clear_route, METH_NOARGS,
     "Take no new misses (flights under way go on)."},
    {"fileno", (PyCFunction)engine_fileno, METH_NOARGS, "The epoll descriptor the loop watches."},
    {"waiting", (PyCFunction)engine_waiting, METH_NOARGS, "Flights with clients waiting."},
    {"close", (PyCFunction)engine_close, METH_NOARGS,
     "End every flight (their clients are not answered); returns how many clients were waiting."},
    {NULL, NULL, 0, NULL},
};

PyDoc_STRVAR(engine_doc,
"Engine(python_inflight, entry_type, on_done, counters, durations, rcodes, buckets, policy,\n"
"       case_exact)\n\n"
"The compiled miss path (see dnscache/_upstream.c). The event loop calls it when fileno() is\n"
"readable; it calls on_done(results) with what Python must learn or decide, each a tuple\n"
"(kind, route, rtt, key, payload, waiters, query): kind 0 an entry built and its clients\n"
"answered (waiters: the ones it was too big for), 1 a reply for Python to judge, 2 a send or\n"
"socket error, 3 no reply within the RTO, 4 the outcome of an exchange whose clients were\n"
"handed over. Waiters are (datagram, address, fd, question end, limit, arrival time).\n"
"counters: array('Q') of 6 (misses, coalesced, spoofed, unsent, started, answered);\n"
"durations: array('Q') of len(buckets) + 2 (counts, +Inf, the sum as a float's bits).");

static PyTypeObject EngineType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "dnscache._fastpath.Engine",
    .tp_basicsize = sizeof(Engine),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = engine_doc,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)engine_init,
    .tp_dealloc = (destructor)engine_dealloc,
    .tp_traverse = (traverseproc)engine_traverse,
    .tp_clear = (inquiry)engine_clear,
    .tp_call = (ternaryfunc)engine_call,
    .tp_methods = engine_methods,
};
