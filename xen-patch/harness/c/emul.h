/*
 * Stand-ins for the Xen internals that xen/common/event_fifo.c and
 * xen/common/event_route.c use, so both compile unmodified (their #include
 * lines stripped, this file prepended) into a user-space library, as Xen's
 * own tools/tests/vpci does.  Single-threaded: locks only check that they
 * are never taken twice.
 */
#ifndef EVROUTE_HARNESS_EMUL_H
#define EVROUTE_HARNESS_EMUL_H

#include <assert.h>
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* The ABI itself is Xen's public header, as patched. */
#include <public/event_channel.h>
#include <public/vcpu.h>

typedef bool bool_t;
#define likely(x)   __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)
#define cf_check
#define __init
#define __read_mostly
#define always_inline inline __attribute__((always_inline))
#define custom_param(name, fn)
#define ASSERT(p) assert(p)

#define PAGE_SIZE 4096UL
#define PAGE_MASK (~(PAGE_SIZE - 1))
#define BITS_PER_LONG 64
#define BITS_TO_LONGS(n) (((n) + BITS_PER_LONG - 1) / BITS_PER_LONG)
#define DIV_ROUND_UP(n, d) (((n) + (d) - 1) / (d))
#define min(a, b) ({ __typeof__(a) a_ = (a); __typeof__(b) b_ = (b); a_ < b_ ? a_ : b_; })
#define max(a, b) ({ __typeof__(a) a_ = (a); __typeof__(b) b_ = (b); a_ > b_ ? a_ : b_; })
#define array_index_nospec(i, n) (i)

/* Logging: counted, not printed (the differential test compares state). */
extern unsigned long hx_warnings;
#define printk(...) ((void)++hx_warnings)
#define gprintk(lvl, ...) ((void)++hx_warnings)
#define gdprintk(lvl, ...) ((void)++hx_warnings)
#define XENLOG_WARNING ""
#define XENLOG_G_WARNING ""

/* Atomics: x86 semantics (locked RMWs are full barriers). */
#define read_atomic(p) __atomic_load_n(p, __ATOMIC_SEQ_CST)
#define write_atomic(p, v) __atomic_store_n(p, v, __ATOMIC_SEQ_CST)
#define cmpxchg(p, o, n) __sync_val_compare_and_swap(p, o, n)
#define smp_rmb() __atomic_thread_fence(__ATOMIC_SEQ_CST)
#define smp_wmb() __atomic_thread_fence(__ATOMIC_SEQ_CST)

/* Bit operations on guest memory: 32-bit words (little-endian). */
#define hx_w32(addr, nr) ((uint32_t *)(addr) + (nr) / 32)
#define hx_b32(nr) (1U << ((nr) % 32))
#define guest_test_bit(d, nr, addr) \
    (!!(__atomic_load_n(hx_w32(addr, nr), __ATOMIC_SEQ_CST) & hx_b32(nr)))
#define guest_set_bit(d, nr, addr) \
    ((void)__atomic_fetch_or(hx_w32(addr, nr), hx_b32(nr), __ATOMIC_SEQ_CST))
#define guest_clear_bit(d, nr, addr) \
    ((void)__atomic_fetch_and(hx_w32(addr, nr), ~hx_b32(nr), __ATOMIC_SEQ_CST))
#define guest_test_and_set_bit(d, nr, addr) \
    (!!(__atomic_fetch_or(hx_w32(addr, nr), hx_b32(nr), __ATOMIC_SEQ_CST) & hx_b32(nr)))

/* Bit operations on Xen's own bitmaps of unsigned long. */
#define hx_wl(addr, nr) ((unsigned long *)(addr) + (nr) / BITS_PER_LONG)
#define hx_bl(nr) (1UL << ((nr) % BITS_PER_LONG))
#define set_bit(nr, addr) ((void)__atomic_fetch_or(hx_wl(addr, nr), hx_bl(nr), __ATOMIC_SEQ_CST))
#define clear_bit(nr, addr) ((void)__atomic_fetch_and(hx_wl(addr, nr), ~hx_bl(nr), __ATOMIC_SEQ_CST))
#define __set_bit(nr, addr) (*hx_wl(addr, nr) |= hx_bl(nr))
#define test_bit(nr, addr) (!!(*hx_wl(addr, nr) & hx_bl(nr)))
static inline unsigned int find_first_set_bit(unsigned long w) { return __builtin_ctzl(w); }
static inline void bitmap_zero(unsigned long *b, unsigned int nbits)
{
    memset(b, 0, BITS_TO_LONGS(nbits) * sizeof(*b));
}
static inline void bitmap_and(unsigned long *d, const unsigned long *a,
                              const unsigned long *b, unsigned int nbits)
{
    for ( unsigned int i = 0; i < BITS_TO_LONGS(nbits); i++ )
        d[i] = a[i] & b[i];
}
static inline unsigned int find_first_bit(const unsigned long *b, unsigned int nbits)
{
    for ( unsigned int i = 0; i < nbits; i++ )
        if ( test_bit(i, b) )
            return i;
    return nbits;
}

/* Locks: never contended here; a second acquisition is a harness bug. */
typedef struct { int held; } spinlock_t;
typedef struct { int writers, readers; } rwlock_t;
#define spin_lock_init(l) ((l)->held = 0)
#define spin_lock(l) do { assert(!(l)->held); (l)->held = 1; } while ( 0 )
#define spin_unlock(l) do { assert((l)->held); (l)->held = 0; } while ( 0 )
#define spin_lock_irqsave(l, f) do { (f) = 0; spin_lock(l); } while ( 0 )
#define spin_unlock_irqrestore(l, f) do { (void)(f); spin_unlock(l); } while ( 0 )
#define write_lock(l) do { assert(!(l)->writers && !(l)->readers); (l)->writers = 1; } while ( 0 )
#define write_unlock(l) ((l)->writers = 0)

/* Memory. */
#define xzalloc(t) ((t *)calloc(1, sizeof(t)))
#define xzalloc_array(t, n) ((t *)calloc((n) ? (n) : 1, sizeof(t)))
#define xmalloc_array(t, n) ((t *)malloc(((n) ? (n) : 1) * sizeof(t)))
#define xzalloc_flex_struct(t, fld, n) \
    ((t *)calloc(1, sizeof(t) + (n) * sizeof(((t *)0)->fld[0])))
#define xfree(p) free(p)

/* Xen's structures, as far as the two files use them. */
#define ECS_FREE         0
#define ECS_RESERVED     1
#define ECS_UNBOUND      2
#define ECS_INTERDOMAIN  3
#define ECS_PIRQ         4
#define ECS_VIRQ         5
#define ECS_IPI          6

union evtchn_fifo_lastq;
struct evtchn_route;
struct evtchn {
    unsigned char state;
    unsigned char xen_consumer;
    evtchn_port_t port;
    union { unsigned int virq; } u;
    bool pending;
    unsigned char priority;
    unsigned short notify_vcpu_id;
    uint32_t fifo_lastq;
    struct evtchn_route *route;
};

#define _VPF_down 1
struct evtchn_fifo_vcpu;
struct vcpu {
    unsigned int vcpu_id;
    struct domain *domain;
    unsigned long pause_flags;
    struct evtchn_fifo_vcpu *evtchn_fifo;
    uint32_t upcall_pending;      /* vcpu_info.evtchn_upcall_pending */
    unsigned int kicks;
};
#define is_idle_vcpu(v) false

struct domain;
struct evtchn_port_ops {
    void (*init)(struct domain *d, struct evtchn *evtchn);
    void (*set_pending)(struct vcpu *v, struct evtchn *evtchn);
    void (*clear_pending)(struct domain *d, struct evtchn *evtchn);
    void (*unmask)(struct domain *d, struct evtchn *evtchn);
    bool (*is_pending)(const struct domain *d, const struct evtchn *evtchn);
    bool (*is_masked)(const struct domain *d, const struct evtchn *evtchn);
    bool (*is_busy)(const struct domain *d, const struct evtchn *evtchn);
    int (*set_priority)(struct domain *d, struct evtchn *evtchn, unsigned int priority);
    void (*print_state)(struct domain *d, const struct evtchn *evtchn);
};

#define HX_PAGES 1040 /* control blocks of up to 1024 vCPUs + event array */
struct evtchn_fifo_domain;
struct evtchn_route_domain;
struct domain {
    unsigned int domain_id;
    unsigned int max_vcpus;
    struct vcpu **vcpu;
    rwlock_t event_lock;
    unsigned int valid_evtchns;
    struct evtchn *evtchn;
    const struct evtchn_port_ops *evtchn_port_ops;
    struct evtchn_fifo_domain *evtchn_fifo;
    struct evtchn_route_domain *evtchn_route;
    unsigned long evtchn_pending[64]; /* shared_info's 2-level bitmap */
    void *pages[HX_PAGES];            /* gfn -> guest page */
};

extern __thread struct vcpu *hx_current;
#define current hx_current
#define domain_vcpu(d, id) ((id) < (d)->max_vcpus ? (d)->vcpu[id] : NULL)
#define for_each_vcpu(d, v) \
    for ( unsigned int v##_i = 0; v##_i < (d)->max_vcpus && ((v) = (d)->vcpu[v##_i]); v##_i++ )
#define port_is_valid(d, p) ((p) < (d)->valid_evtchns)
#define evtchn_from_port(d, p) (&(d)->evtchn[p])
#define max_evtchns(d) ((d)->valid_evtchns)
#define shared_info(d, field) ((d)->field)

void vcpu_mark_events_pending(struct vcpu *v);
#define evtchn_check_pollers(d, port) ((void)0)

/* Guest pages: gfn n is the harness's page n. */
struct page_info;
#define P2M_ALLOC 0
#define PGT_writable_page 0
#define get_page_from_gfn(d, gfn, t, q) \
    ((gfn) < HX_PAGES ? (struct page_info *)(d)->pages[gfn] : NULL)
#define get_page_type(p, t) 1
#define put_page(p) ((void)(p))
#define put_page_and_type(p) ((void)(p))
#define __map_domain_page_global(p) ((void *)(p))
#define unmap_domain_page_global(v) ((void)(v))
#define domain_page_map_to_mfn(v) 0
#define mfn_to_page(m) ((struct page_info *)0)

/* Guest copies: the address HX_BAD_ADDR (or 0) faults. */
#define HX_BAD_ADDR 0xbad0UL
#define guest_handle_from_ptr(ptr, t) { (t *)(ptr) }
int hx_copy(void *dst, const void *src, size_t n);
#define copy_from_guest(dst, h, n) hx_copy(dst, (h).p, n)
#define copy_to_guest(h, src, n) hx_copy((h).p, src, n)

/* Declared by xen/common/event_channel.h and xen/include/xen/event_route.h. */
int evtchn_fifo_init_control(struct evtchn_init_control *init_control);
int evtchn_fifo_expand_array(const struct evtchn_expand_array *expand_array);
void evtchn_fifo_destroy(struct domain *d);

#endif /* EVROUTE_HARNESS_EMUL_H */
