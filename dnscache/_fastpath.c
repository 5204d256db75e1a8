/* The cache-hit fast path of netkit's DNS cache, compiled (see dnscache/fastpath.py).
 *
 * One call to serve() receives a batch of datagrams with recvmmsg(2), answers the ordinary
 * queries whose answer is cached and fresh with sendmmsg(2), and hands everything else back to
 * Python (misses, odd messages, answers too big for the client) exactly as the pure-Python path
 * would have seen it. It is the same algorithm as dnscache.server.read_question and
 * _UdpProtocol.datagram_received, on the same cache entries (dnscache.core.cache.CacheEntry: a
 * bytearray whose header layout is fixed there and asserted in tests/unit/test_fastpath.py).
 *
 * This is the parser of untrusted bytes: every offset is checked against the datagram's length
 * before it is read, and nothing is written outside the per-slot buffers. A datagram the kernel
 * truncated (larger than a slot) goes to Python untouched by the walker, flagged.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <arpa/inet.h>
#include <errno.h>
#include <malloc.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define BATCH 64
#define SLOT_SIZE 65536       /* any UDP datagram fits: nothing reaches Python truncated */
#define OUT_SIZE 1232         /* EDNS_UDP_SIZE: the most the hit path sends */
#define MAX_NAME_LEN 255
#define RCODE_SLOTS 24

/* CacheEntry header offsets (struct "=dIIIIiBBHHHHHH" then rows "=HIH"): the store time, then
 * the other times as milliseconds after it; a time is read as stored + ms / 1000.0, as in Python */
#define OFF_STORED 0
#define OFF_EXPIRES_MS 8
#define OFF_PREFETCH_MS 12
#define OFF_STALE_MS 16
#define OFF_RECHECK_MS 20
#define OFF_AGE 24
#define OFF_HITS 28
#define OFF_REFERENCED 29
#define OFF_WIRE_START 30
#define OFF_RECORDS 32
#define META_SIZE 42
#define ROW_SIZE 8

/* The workspace each listener passes in (an anonymous mmap: its pages are only allocated once
 * touched): BATCH receive slots, BATCH reply buffers, BATCH peer addresses. Per listener, not
 * static: two servers in one process (tests) may serve on two threads, and an allocation inside
 * serve() can run a finalizer that lets the other thread in. */
typedef struct {
    unsigned char in[BATCH][SLOT_SIZE];
    unsigned char out[BATCH][OUT_SIZE];
    struct sockaddr_storage peers[BATCH];
} workspace_t;

/* What read_question finds: the key is built by the caller from these. */
typedef struct {
    Py_ssize_t qend;
    int limit;
    unsigned char variant;
} question_t;

/* 1 for an ordinary query (see dnscache.server.read_question), 0 for anything else. */
static int read_question(const unsigned char *d, Py_ssize_t n, question_t *q) {
    if (n < 17 || (d[2] & 0xF8) || d[4] != 0 || d[5] != 1 || d[6] || d[7] || d[8] || d[9])
        return 0;
    Py_ssize_t i = 12;
    while (i < n) {
        unsigned char len = d[i];
        if (len == 0 || len > 63)
            break;
        i += len + 1;
    }
    Py_ssize_t qend = i + 5;
    if (i >= n || d[i] != 0 || qend > n || i > MAX_NAME_LEN + 11)
        return 0;
    int variant, limit;
    if (d[10] == 0 && d[11] == 0) {
        if (qend != n)
            return 0;
        variant = 0;
        limit = 512;
    } else if (d[10] == 0 && d[11] == 1 && n >= qend + 11 && d[qend] == 0 && d[qend + 1] == 0 &&
               d[qend + 2] == 41 && d[qend + 6] == 0 &&
               qend + 11 + ((d[qend + 9] << 8) | d[qend + 10]) == n) {
        int size = (d[qend + 3] << 8) | d[qend + 4];
        limit = size > OUT_SIZE ? OUT_SIZE : size > 512 ? size : 512;
        variant = (d[qend + 7] & 0x80) ? 3 : 1;
    } else {
        return 0;
    }
    if (d[3] & 0x10)
        variant |= 4;
    q->qend = qend;
    q->limit = limit;
    q->variant = (unsigned char)variant;
    return 1;
}

/* The cache key: the question name case-folded (ASCII), type and class, the variant byte. */
static PyObject *make_key(const unsigned char *d, const question_t *q) {
    Py_ssize_t name_end = q->qend - 4;
    PyObject *key = PyBytes_FromStringAndSize(NULL, q->qend - 12 + 1);
    if (key == NULL)
        return NULL;
    unsigned char *k = (unsigned char *)PyBytes_AS_STRING(key);
    for (Py_ssize_t i = 12; i < name_end; i++) {
        unsigned char c = d[i];
        k[i - 12] = (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
    }
    memcpy(k + (name_end - 12), d + name_end, 4);
    k[q->qend - 12] = q->variant;
    return key;
}

static PyObject *question_tuple(const unsigned char *d, const question_t *q, PyObject *key) {
    if (key == NULL) {
        key = make_key(d, q);
        if (key == NULL)
            return NULL;
    } else {
        Py_INCREF(key);
    }
    return Py_BuildValue("(Nni)", key, q->qend, q->limit);
}

static PyObject *address_tuple(const struct sockaddr_storage *ss) {
    char host[INET6_ADDRSTRLEN];
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        if (inet_ntop(AF_INET, &a->sin_addr, host, sizeof host) == NULL)
            return PyErr_SetFromErrno(PyExc_OSError);
        return Py_BuildValue("(si)", host, ntohs(a->sin_port));
    }
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        if (inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host) == NULL)
            return PyErr_SetFromErrno(PyExc_OSError);
        return Py_BuildValue("(siII)", host, ntohs(a->sin6_port), ntohl(a->sin6_flowinfo),
                             a->sin6_scope_id);
    }
    Py_RETURN_NONE;
}

static void store_be32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* CacheEntry.render_fresh in place: the TTLs at the whole-second age (the caller checked the
 * header is there). Returns 0 if a row points outside the entry (never, for entries we built). */
static int render_fresh(unsigned char *e, Py_ssize_t len, Py_ssize_t start, int32_t age) {
    uint16_t records;
    memcpy(&records, e + OFF_RECORDS, 2);
    if (META_SIZE + (Py_ssize_t)records * ROW_SIZE > start)
        return 0;
    for (uint16_t r = 0; r < records; r++) {
        const unsigned char *row = e + META_SIZE + (Py_ssize_t)r * ROW_SIZE;
        uint16_t off;
        uint32_t ttl;
        memcpy(&off, row, 2);
        memcpy(&ttl, row + 2, 4);
        if (start + off + 4 > len)
            return 0;
        store_be32(e + start + off, ttl > (uint32_t)age ? ttl - (uint32_t)age : 0);
    }
    memcpy(e + OFF_AGE, &age, 4);
    return 1;
}

/* Answer datagram d (n octets) from the cache into out if it can be; returns the reply's length,
 * 0 when Python must answer it. *key_out gets the key (a new reference) when one was built. */
static Py_ssize_t answer_hit(const unsigned char *d, Py_ssize_t n, const question_t *q,
                             PyObject *entries, double now, unsigned char *out, PyObject *key,
                             PyObject **prefetch, uint64_t *rcodes, int *error, int *absent) {
    PyObject *obj = PyDict_GetItemWithError(entries, key); /* borrowed */
    if (obj == NULL) {
        if (PyErr_Occurred())
            *error = 1;
        else
            *absent = 1;
        return 0;
    }
    if (!PyByteArray_Check(obj))
        return 0;
    Py_ssize_t len = PyByteArray_GET_SIZE(obj);
    unsigned char *e = (unsigned char *)PyByteArray_AS_STRING(obj);
    if (len < META_SIZE)
        return 0;
    double stored;
    uint32_t expires_ms, prefetch_ms;
    int32_t age;
    uint16_t start;
    memcpy(&stored, e + OFF_STORED, 8);
    memcpy(&expires_ms, e + OFF_EXPIRES_MS, 4);
    memcpy(&prefetch_ms, e + OFF_PREFETCH_MS, 4);
    memcpy(&age, e + OFF_AGE, 4);
    memcpy(&start, e + OFF_WIRE_START, 2);
    if (!(now < stored + (double)expires_ms / 1000.0) || start < META_SIZE || start > len)
        return 0;
    double elapsed = now - stored;
    int32_t now_age = (elapsed >= 0 && elapsed < 2147483647.0) ? (int32_t)elapsed : -2;
    if (now_age < 0)
        return 0; /* a clock step backwards: let Python's path decide */
    if (now_age != age && !render_fresh(e, len, start, now_age))
        return 0;
    Py_ssize_t wlen = len - start;
    if (wlen > q->limit || wlen > OUT_SIZE || wlen < q->qend)
        return 0;
    memcpy(out, e + start, (size_t)wlen);
    out[0] = d[0];
    out[1] = d[1];
    out[2] = (unsigned char)((out[2] & 0xFE) | (d[2] & 0x01));
    memcpy(out + 12, d + 12, (size_t)(q->qend - 4 - 12));
    if (e[OFF_HITS] < 255)
        e[OFF_HITS]++;
    e[OFF_REFERENCED] = 1;
    rcodes[out[3] & 0xF]++;
    if (now >= stored + (double)prefetch_ms / 1000.0) {
        if (*prefetch == NULL && (*prefetch = PyList_New(0)) == NULL) {
            *error = 1;
            return 0;
        }
        PyObject *pair = PyTuple_Pack(2, key, obj);
        if (pair == NULL || PyList_Append(*prefetch, pair) < 0) {
            Py_XDECREF(pair);
            *error = 1;
            return 0;
        }
        Py_DECREF(pair);
    }
    return wlen;
}

static int get_counters(PyObject *obj, Py_buffer *view, Py_ssize_t slots) {
    if (PyObject_GetBuffer(obj, view, PyBUF_WRITABLE | PyBUF_FORMAT) < 0)
        return -1;
    if (view->itemsize != 8 || view->len != slots * 8 || view->format == NULL ||
        (strcmp(view->format, "Q") != 0 && strcmp(view->format, "L") != 0)) {
        PyBuffer_Release(view);
        PyErr_Format(PyExc_ValueError, "counters must be array('Q') of %zd counters", slots);
        return -1;
    }
    return 0;
}

/* the miss engine: it uses the helpers above, serve_batch hands it misses */
#include "_upstream.c"

PyDoc_STRVAR(serve_doc,
"serve(fd, workspace, entries, now, rcodes, misses, prefetch) -> (received, answered, unsent)\n\n"
"Receive up to 64 datagrams from the non-blocking UDP socket fd into workspace (a writable\n"
"buffer of WORKSPACE_SIZE octets, one per listener), answer the cache hits from\n"
"entries (dict of key -> CacheEntry) fresh at now (time.monotonic), counting their rcodes into\n"
"rcodes (array('Q'), 24 slots). Appends (datagram, address, question-or-None) to misses for the\n"
"slow path and (key, entry) to prefetch for entries past their prefetch point.");

/* One batch: receive, answer the hits, send. Misses and prefetch candidates are appended to
 * *misses and *prefetch (lists created on first use when NULL). counts: received, answered,
 * unsent. Returns -1 with a Python exception set, else 0 (also when nothing was there). */
static int serve_batch(int fd, workspace_t *w, PyObject *entries, double now, uint64_t *rcodes,
                       PyObject **misses, PyObject **prefetch, int counts[3], Engine *engine,
                       unsigned int vlen) {
    struct mmsghdr msgs[BATCH];
    struct iovec iovs[BATCH];
    counts[0] = counts[1] = counts[2] = 0;
    memset(msgs, 0, vlen * sizeof msgs[0]);
    for (unsigned int i = 0; i < vlen; i++) {
        iovs[i].iov_base = w->in[i];
        iovs[i].iov_len = SLOT_SIZE;
        msgs[i].msg_hdr.msg_iov = &iovs[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
        msgs[i].msg_hdr.msg_name = &w->peers[i];
        msgs[i].msg_hdr.msg_namelen = sizeof w->peers[i];
    }
    int got = recvmmsg(fd, msgs, vlen, MSG_DONTWAIT, NULL);
    if (got < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR || errno == ECONNREFUSED)
            return 0;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }

    struct mmsghdr replies[BATCH];
    struct iovec reply_iovs[BATCH];
    int answered = 0, error = 0;
    for (int i = 0; i < got && !error; i++) {
        const unsigned char *d = w->in[i];
        Py_ssize_t n = (Py_ssize_t)msgs[i].msg_len;
        int truncated = (msgs[i].msg_hdr.msg_flags & MSG_TRUNC) != 0;
        question_t q;
        int ordinary = !truncated && read_question(d, n, &q);
        PyObject *key = NULL;
        if (ordinary) {
            key = make_key(d, &q);
            if (key == NULL) {
                error = 1;
                break;
            }
            int absent = 0;
            Py_ssize_t wlen = answer_hit(d, n, &q, entries, now, w->out[answered], key, prefetch,
                                         rcodes, &error, &absent);
            if (!error && absent && engine != NULL) {
                int taken = engine_take(engine, key, d, n, &q, &w->peers[i],
                                        msgs[i].msg_hdr.msg_namelen, fd, now);
                if (taken > 0) {
                    Py_DECREF(key);
                    continue;
                }
                error = taken < 0;
            }
            if (error) {
                Py_DECREF(key);
                break;
            }
            if (wlen > 0) {
                Py_DECREF(key);
                reply_iovs[answered].iov_base = w->out[answered];
                reply_iovs[answered].iov_len = (size_t)wlen;
                memset(&replies[answered], 0, sizeof replies[answered]);
                replies[answered].msg_hdr.msg_iov = &reply_iovs[answered];
                replies[answered].msg_hdr.msg_iovlen = 1;
                replies[answered].msg_hdr.msg_name = &w->peers[i];
                replies[answered].msg_hdr.msg_namelen = msgs[i].msg_hdr.msg_namelen;
                answered++;
                continue;
            }
        }
        PyObject *question = ordinary ? question_tuple(d, &q, key) : (Py_INCREF(Py_None), Py_None);
        Py_XDECREF(key);
        PyObject *data = PyBytes_FromStringAndSize((const char *)d, n);
        PyObject *addr = address_tuple(&w->peers[i]);
        PyObject *miss = (question && data && addr) ? PyTuple_Pack(3, data, addr, question) : NULL;
        Py_XDECREF(question);
        Py_XDECREF(data);
        Py_XDECREF(addr);
        if (miss != NULL && *misses == NULL)
            *misses = PyList_New(0);
        if (miss == NULL || *misses == NULL || PyList_Append(*misses, miss) < 0)
            error = 1;
        Py_XDECREF(miss);
    }

    /* send what was answered even if a later datagram failed: those clients are served */
    int sent = 0;
    while (sent < answered) {
        int r = sendmmsg(fd, replies + sent, (unsigned int)(answered - sent), MSG_DONTWAIT);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            sent++; /* one destination refused (EPERM, unreachable): skip it, send the rest */
            continue;
        }
        sent += r;
    }
    counts[0] = got;
    counts[1] = answered;
    counts[2] = answered - sent;
    return error ? -1 : 0;
}

static int get_workspace(PyObject *obj, Py_buffer *view) {
    if (PyObject_GetBuffer(obj, view, PyBUF_WRITABLE) < 0)
        return -1;
    if (view->len < (Py_ssize_t)sizeof(workspace_t)) {
        PyBuffer_Release(view);
        PyErr_SetString(PyExc_ValueError, "workspace is smaller than WORKSPACE_SIZE");
        return -1;
    }
    return 0;
}

static PyObject *serve(PyObject *self, PyObject *args) {
    int fd;
    PyObject *work_obj, *entries, *rcodes_obj, *misses, *prefetch;
    double now;
    if (!PyArg_ParseTuple(args, "iOO!dOO!O!", &fd, &work_obj, &PyDict_Type, &entries, &now,
                          &rcodes_obj, &PyList_Type, &misses, &PyList_Type, &prefetch))
        return NULL;
    Py_buffer work_view, view;
    if (get_workspace(work_obj, &work_view) < 0)
        return NULL;
    if (get_counters(rcodes_obj, &view, RCODE_SLOTS) < 0) {
        PyBuffer_Release(&work_view);
        return NULL;
    }
    int counts[3];
    int r = serve_batch(fd, (workspace_t *)work_view.buf, entries, now, (uint64_t *)view.buf,
                        &misses, &prefetch, counts, NULL, BATCH);
    PyBuffer_Release(&view);
    PyBuffer_Release(&work_view);
    if (r < 0)
        return NULL;
    return Py_BuildValue("(iii)", counts[0], counts[1], counts[2]);
}

/* Reader: the listener's event-loop callback itself (no Python frame per wake-up). */
typedef struct {
    PyObject_HEAD
    int fd;
    int open;
    int single;       /* > 0: receive one datagram per wake-up, this many more (next_vlen) */
    double idle_from; /* when the last call ended */
    PyObject *workspace, *entries, *rcodes_obj, *counts_obj, *on_rest, *clock, *engine;
    Py_buffer work, rcodes, counts;
} Reader;

/* Idle time before a wake-up, under which the datagram it found was probably not alone. */
#define BUSY_GAP 10e-6
/* Single receives in a row before a batch probes again (a load that rose unnoticed). */
#define SINGLES 16

/* How many datagrams the next wake-up asks for. recvmmsg(2) for BATCH tries another datagram
 * after each one it got and stops only when one fails (EAGAIN): when every wake-up finds a
 * single datagram (a light load), that failed receive costs 150-200 ns a wake-up (1-2 % of its
 * CPU; benchmarks/recvmmsg_cost.py). So a batch that got one switches to single receives, and
 * a single receive that came soon after the last call (the socket was readable while we were
 * busy: a queue is forming) switches back to batches, as does every SINGLES-th wake-up. */
static void next_vlen(Reader *r, int got, unsigned int vlen, double started) {
    if (vlen == BATCH)
        r->single = got == 1 ? SINGLES : 0;
    else if (got == 1 && started - r->idle_from < BUSY_GAP)
        r->single = 0;
    else
        r->single--;
}

static int reader_traverse(Reader *r, visitproc visit, void *arg) {
    Py_VISIT(r->entries);
    Py_VISIT(r->on_rest);
    Py_VISIT(r->clock);
    Py_VISIT(r->engine);
    return 0;
}

static void reader_release(Reader *r) {
    if (r->open) {
        r->open = 0;
        PyBuffer_Release(&r->work);
        PyBuffer_Release(&r->rcodes);
        PyBuffer_Release(&r->counts);
    }
    Py_CLEAR(r->workspace);
    Py_CLEAR(r->rcodes_obj);
    Py_CLEAR(r->counts_obj);
}

static int reader_clear(Reader *r) {
    reader_release(r);
    Py_CLEAR(r->entries);
    Py_CLEAR(r->on_rest);
    Py_CLEAR(r->clock);
    Py_CLEAR(r->engine);
    return 0;
}

static void reader_dealloc(Reader *r) {
    PyObject_GC_UnTrack(r);
    reader_clear(r);
    Py_TYPE(r)->tp_free((PyObject *)r);
}

static int reader_init(Reader *r, PyObject *args, PyObject *kwds) {
    static char *names[] = {"fd", "workspace", "entries", "rcodes", "counts", "on_rest", "clock",
                            "engine", NULL};
    int fd;
    PyObject *workspace, *entries, *rcodes, *counts, *on_rest, *clock = Py_None, *engine = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "iOO!OOO|OO", names, &fd, &workspace,
                                     &PyDict_Type, &entries, &rcodes, &counts, &on_rest, &clock,
                                     &engine))
        return -1;
    if (engine != Py_None && (!PyObject_TypeCheck(engine, &EngineType) || clock != Py_None)) {
        PyErr_SetString(PyExc_TypeError, "engine must be an Engine, on the monotonic clock");
        return -1;
    }
    if (!PyCallable_Check(on_rest) || (clock != Py_None && !PyCallable_Check(clock))) {
        PyErr_SetString(PyExc_TypeError, "on_rest and clock must be callable");
        return -1;
    }
    reader_clear(r);
    r->single = 0;
    r->idle_from = 0.0;
    if (get_workspace(workspace, &r->work) < 0)
        return -1;
    if (get_counters(rcodes, &r->rcodes, RCODE_SLOTS) < 0) {
        PyBuffer_Release(&r->work);
        return -1;
    }
    if (get_counters(counts, &r->counts, 3) < 0) {
        PyBuffer_Release(&r->work);
        PyBuffer_Release(&r->rcodes);
        return -1;
    }
    r->open = 1;
    r->fd = fd;
    r->workspace = Py_NewRef(workspace);
    r->rcodes_obj = Py_NewRef(rcodes);
    r->counts_obj = Py_NewRef(counts);
    r->entries = Py_NewRef(entries);
    r->on_rest = Py_NewRef(on_rest);
    r->clock = Py_NewRef(clock);
    r->engine = engine == Py_None ? NULL : Py_NewRef(engine);
    return 0;
}

static double monotonic(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts); /* what time.monotonic() reads */
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* One wake-up: a batch of vlen, then on_rest with what it left. */
static PyObject *reader_serve(Reader *r, double started, unsigned int vlen) {
    double now = started;
    if (r->clock != Py_None) {
        PyObject *t = PyObject_CallNoArgs(r->clock);
        if (t == NULL)
            return NULL;
        now = PyFloat_AsDouble(t);
        Py_DECREF(t);
        if (now == -1.0 && PyErr_Occurred())
            return NULL;
    }
    PyObject *misses = NULL, *prefetch = NULL;
    int counts[3];
    int status = serve_batch(r->fd, (workspace_t *)r->work.buf, r->entries, now,
                             (uint64_t *)r->rcodes.buf, &misses, &prefetch, counts,
                             (Engine *)r->engine, vlen);
    next_vlen(r, counts[0], vlen, started);
    uint64_t *total = (uint64_t *)r->counts.buf;
    total[0] += (uint64_t)counts[0];
    total[1] += (uint64_t)counts[1];
    total[2] += (uint64_t)counts[2];
    if (status < 0) {
        Py_XDECREF(misses);
        Py_XDECREF(prefetch);
        if (PyErr_ExceptionMatches(PyExc_OSError)) {
            PyErr_Clear(); /* the socket went away under us (stop): nothing was received */
            Py_RETURN_NONE;
        }
        return NULL;
    }
    if (misses == NULL && prefetch == NULL)
        Py_RETURN_NONE;
    if (misses == NULL)
        misses = PyList_New(0);
    if (prefetch == NULL)
        prefetch = PyList_New(0);
    PyObject *out = (misses && prefetch) ? PyObject_CallFunctionObjArgs(r->on_rest, misses, prefetch, NULL) : NULL;
    Py_XDECREF(misses);
    Py_XDECREF(prefetch);
    if (out == NULL)
        return NULL;
    Py_DECREF(out);
    Py_RETURN_NONE;
}

static PyObject *reader_call(Reader *r, PyObject *args, PyObject *kwds) {
    if (!r->open)
        Py_RETURN_NONE; /* closed: a wake-up still queued on the loop */
    PyObject *out = reader_serve(r, monotonic(), r->single > 0 ? 1 : BATCH);
    r->idle_from = monotonic();
    return out;
}

static PyObject *reader_close(Reader *r, PyObject *unused) {
    reader_release(r);
    Py_RETURN_NONE;
}

static PyObject *reader_batch(Reader *r, void *unused) {
    return PyLong_FromLong(r->single > 0 ? 1 : BATCH);
}

static PyGetSetDef reader_getset[] = {
    {"batch", (getter)reader_batch, NULL,
     "How many datagrams the next wake-up asks recvmmsg(2) for: BATCH, or 1 while the load is light.",
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef reader_methods[] = {
    {"close", (PyCFunction)reader_close, METH_NOARGS,
     "Release the workspace and counters (the mapping can be closed after) and stop serving."},
    {NULL, NULL, 0, NULL},
};

PyDoc_STRVAR(reader_doc,
"Reader(fd, workspace, entries, rcodes, counts, on_rest, clock=None, engine=None)\n\n"
"The event loop's reader callback for one UDP socket: each call serves one batch as serve()\n"
"does (of one datagram while each wake-up finds one: see batch), adds received/answered/unsent\n"
"to counts (array('Q') of 3), and calls on_rest(misses, prefetch) when the batch left anything\n"
"for Python. clock None reads CLOCK_MONOTONIC (time.monotonic) directly; else it is called for\n"
"the time. With an Engine, misses it can take (see Engine) go to it instead of on_rest.");

static PyTypeObject ReaderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "dnscache._fastpath.Reader",
    .tp_basicsize = sizeof(Reader),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = reader_doc,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)reader_init,
    .tp_dealloc = (destructor)reader_dealloc,
    .tp_traverse = (traverseproc)reader_traverse,
    .tp_clear = (inquiry)reader_clear,
    .tp_call = (ternaryfunc)reader_call,
    .tp_methods = reader_methods,
    .tp_getset = reader_getset,
};

PyDoc_STRVAR(read_question_doc,
"read_question(data) -> (key, question end, UDP size limit) or None\n\n"
"The C walker serve() uses, for differential tests against dnscache.server.read_question.");

static PyObject *py_read_question(PyObject *self, PyObject *arg) {
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    question_t q;
    PyObject *out;
    if (read_question((const unsigned char *)view.buf, view.len, &q))
        out = question_tuple((const unsigned char *)view.buf, &q, NULL);
    else
        out = (Py_INCREF(Py_None), Py_None);
    PyBuffer_Release(&view);
    return out;
}

PyDoc_STRVAR(trim_doc,
"trim() -> bool\n\n"
"Give free heap memory back to the kernel (glibc's malloc_trim(0)): what a burst of misses or a\n"
"resized cache table left behind in the middle of the heap. True if anything was released.");

static PyObject *trim(PyObject *self, PyObject *unused) {
    return PyBool_FromLong(malloc_trim(0));
}

static PyMethodDef methods[] = {
    {"trim", trim, METH_NOARGS, trim_doc},
    {"serve", serve, METH_VARARGS, serve_doc},
    {"read_question", py_read_question, METH_O, read_question_doc},
    {"entry_from_reply", py_entry_from_reply, METH_VARARGS, entry_from_reply_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "dnscache._fastpath",
    "The compiled cache-hit path (recvmmsg/sendmmsg batches); see dnscache.fastpath.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fastpath(void) {
    if (PyType_Ready(&ReaderType) < 0 || PyType_Ready(&EngineType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&ReaderType);
    if (PyModule_AddObject(m, "Reader", (PyObject *)&ReaderType) < 0) {
        Py_DECREF(&ReaderType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&EngineType);
    if (PyModule_AddObject(m, "Engine", (PyObject *)&EngineType) < 0) {
        Py_DECREF(&EngineType);
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddIntConstant(m, "BATCH", BATCH) < 0 ||
        PyModule_AddIntConstant(m, "SINGLES", SINGLES) < 0 ||
        PyModule_AddIntConstant(m, "OUT_SIZE", OUT_SIZE) < 0 ||
        PyModule_AddIntConstant(m, "META_SIZE", META_SIZE) < 0 ||
        PyModule_AddIntConstant(m, "RCODE_SLOTS", RCODE_SLOTS) < 0 ||
        PyModule_AddIntConstant(m, "ENGINE_COUNTERS", N_COUNTERS) < 0 ||
        PyModule_AddIntConstant(m, "WORKSPACE_SIZE", (long)sizeof(workspace_t)) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
