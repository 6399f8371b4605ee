/*
 * Stand-ins for the Xen internals that xen/common/event_fifo.c and
 * xen/common/event_route.c use, so both compile unmodified (their #include
 * lines stripped, this file prepended) into a user-space library, as Xen's
 * own tools/tests/vpci does.  Single-threaded: locks only count how many
 * are held, so that a guest copy made under one is caught.
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

/* The build the series is tested in: routing compiled in, 32-bit PV too. */
#define CONFIG_EVTCHN_ROUTE 1
#define CONFIG_EVTCHN_ROUTE_STATS 1
#define CONFIG_COMPAT 1
#define CONFIG_PV32 1

typedef bool bool_t;
#define likely(x)   __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)
#define cf_check
#define __init
#define __read_mostly
#define __ro_after_init
#define always_inline inline __attribute__((always_inline))
#define custom_param(name, fn)
#define integer_param(name, var)
#define ASSERT(p) assert(p)

#define PAGE_SIZE 4096UL
#define PAGE_MASK (~(PAGE_SIZE - 1))
#define BITS_PER_LONG 64
#define BITS_TO_LONGS(n) (((n) + BITS_PER_LONG - 1) / BITS_PER_LONG)
#define DIV_ROUND_UP(n, d) (((n) + (d) - 1) / (d))
#define min(a, b) ({ __typeof__(a) a_ = (a); __typeof__(b) b_ = (b); a_ < b_ ? a_ : b_; })
#define max(a, b) ({ __typeof__(a) a_ = (a); __typeof__(b) b_ = (b); a_ > b_ ? a_ : b_; })
#define array_index_nospec(i, n) (i)

/* Time: Xen's NOW() in ns, moved on by the test (hx_time_passes()). */
typedef int64_t s_time_t;
extern s_time_t hx_now;
#define NOW() (hx_now)

/* Logging: counted, not printed (the differential test compares state). */
extern unsigned long hx_warnings;
static inline void hx_printk(const char *fmt, ...)
{
    (void)fmt;
    hx_warnings++;
}
#define printk(...) hx_printk(__VA_ARGS__)
#define gprintk(lvl, ...) hx_printk(__VA_ARGS__)
#define gdprintk(lvl, ...) hx_printk(__VA_ARGS__)
#define XENLOG_WARNING ""
#define XENLOG_G_WARNING ""

/* Atomics: x86 semantics (locked RMWs are full barriers). */
#define read_atomic(p) __atomic_load_n(p, __ATOMIC_SEQ_CST)
#define write_atomic(p, v) __atomic_store_n(p, v, __ATOMIC_SEQ_CST)
#define cmpxchg(p, o, n) __sync_val_compare_and_swap(p, o, n)
#define xchg(p, v) __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST)
#define smp_rmb() __atomic_thread_fence(__ATOMIC_SEQ_CST)
#define smp_wmb() __atomic_thread_fence(__ATOMIC_SEQ_CST)
#define smp_mb() __atomic_thread_fence(__ATOMIC_SEQ_CST)
typedef struct { int counter; } atomic_t;
#define atomic_inc(a) ((void)__atomic_fetch_add(&(a)->counter, 1, __ATOMIC_SEQ_CST))
#define atomic_read(a) __atomic_load_n(&(a)->counter, __ATOMIC_SEQ_CST)
#define atomic_set(a, v) __atomic_store_n(&(a)->counter, v, __ATOMIC_SEQ_CST)
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define BUILD_BUG_ON(cond) _Static_assert(!(cond), #cond)

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
#define change_bit(nr, addr) ((void)__atomic_fetch_xor(hx_wl(addr, nr), hx_bl(nr), __ATOMIC_SEQ_CST))
#define __set_bit(nr, addr) (*hx_wl(addr, nr) |= hx_bl(nr))
#define test_bit(nr, addr) (!!(*(const unsigned long *)hx_wl(addr, nr) & hx_bl(nr)))
#define ffsl(w) __builtin_ffsl(w)
static inline void bitmap_zero(unsigned long *b, unsigned int nbits)
{
    memset(b, 0, BITS_TO_LONGS(nbits) * sizeof(*b));
}
static inline bool bitmap_empty(const unsigned long *b, unsigned int nbits)
{
    for ( unsigned int i = 0; i < nbits; i++ )
        if ( test_bit(i, b) )
            return false;
    return true;
}
static inline unsigned int find_first_bit(const unsigned long *b, unsigned int nbits)
{
    for ( unsigned int i = 0; i < nbits; i++ )
        if ( test_bit(i, b) )
            return i;
    return nbits;
}
/* xen/common/bitmap.c, little-endian. */
static inline void bitmap_long_to_byte(uint8_t *bp, const unsigned long *lp,
                                       unsigned int nbits)
{
    memcpy(bp, lp, DIV_ROUND_UP(nbits, 8));
    if ( nbits % 8 )
        bp[nbits / 8] &= (1U << (nbits % 8)) - 1;
}
static inline void bitmap_byte_to_long(unsigned long *lp, const uint8_t *bp,
                                       unsigned int nbits)
{
    if ( nbits & (BITS_PER_LONG - 1) )
        lp[BITS_TO_LONGS(nbits) - 1] = 0;
    memcpy(lp, bp, DIV_ROUND_UP(nbits, 8));
}

/*
 * Locks: never contended here.  hx_locks_held counts the ones held, so a
 * guest copy can check it holds none; a second acquisition is a harness bug.
 */
extern unsigned int hx_locks_held;
typedef struct { int held; } spinlock_t;
typedef struct { int writers, readers; } rwlock_t;
#define spin_lock_init(l) ((l)->held = 0)
#define spin_lock(l) do { assert(!(l)->held); (l)->held = 1; hx_locks_held++; } while ( 0 )
#define spin_unlock(l) do { assert((l)->held); (l)->held = 0; hx_locks_held--; } while ( 0 )
#define spin_lock_irqsave(l, f) do { (f) = 0; spin_lock(l); } while ( 0 )
#define spin_unlock_irqrestore(l, f) do { (void)(f); spin_unlock(l); } while ( 0 )
#define write_lock(l) do { assert(!(l)->writers && !(l)->readers); (l)->writers = 1; hx_locks_held++; } while ( 0 )
#define write_unlock(l) do { assert((l)->writers); (l)->writers = 0; hx_locks_held--; } while ( 0 )
#define read_lock(l) do { assert(!(l)->writers); (l)->readers++; hx_locks_held++; } while ( 0 )
#define read_unlock(l) do { assert((l)->readers); (l)->readers--; hx_locks_held--; } while ( 0 )

/* Memory: the Nth allocation after hx_fail_alloc_in = N fails. */
void *hx_xalloc(size_t size, bool zero);
#define xzalloc(t) ((t *)hx_xalloc(sizeof(t), true))
static inline size_t hx_array_size(size_t n, size_t size)
{
    return n ? n * size : size;
}
#define xzalloc_array(t, n) ((t *)hx_xalloc(hx_array_size(n, sizeof(t)), true))
#define xmalloc_array(t, n) ((t *)hx_xalloc(hx_array_size(n, sizeof(t)), false))
#define xzalloc_flex_struct(t, fld, n) \
    ((t *)hx_xalloc(sizeof(t) + (n) * sizeof(((t *)0)->fld[0]), true))
void hx_xfree(void *p);
#define xfree(p) hx_xfree(p)
/* vmalloc'ed memory: tracked apart, so xfree() of it is caught. */
void *hx_valloc(size_t size);
void hx_vfree(void *p);
#define vzalloc(size) hx_valloc(size)
#define vfree(p) hx_vfree(p)

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
    union {
        unsigned long word;
        struct evtchn_route *ext;
    } route;    atomic_t routed[3];
};

#define _VPF_down 1
struct evtchn_fifo_vcpu;
struct vcpu {
    unsigned int vcpu_id;
    struct domain *domain;
    unsigned long pause_flags;
    struct vcpu_runstate_info runstate;
    struct evtchn_fifo_vcpu *evtchn_fifo;
    uint8_t upcall_pending;       /* vcpu_info.evtchn_upcall_pending */
    unsigned int kicks;
    bool hcall_compat;            /* the hypercall uses the compat ABI */
    bool hx_no_upcall;            /* an HVM vCPU no upcall reaches */
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
    bool hx_pv32;                     /* a 32-bit PV guest */
    bool hx_compat_calls;             /* an HVM guest calling in 32-bit mode */
};

extern __thread struct vcpu *hx_current;
#define current hx_current
#define domain_vcpu(d, id) ((id) < (d)->max_vcpus ? (d)->vcpu[id] : NULL)
/* As Xen's list walk: vCPUs that do not exist are skipped. */
#define for_each_vcpu(d, v) \
    for ( unsigned int v##_i = 0; v##_i < (d)->max_vcpus; v##_i++ ) \
        if ( ((v) = (d)->vcpu[v##_i]) == NULL ) {} else
#define port_is_valid(d, p) ((p) < (d)->valid_evtchns)
#define evtchn_from_port(d, p) (&(d)->evtchn[p])
#define max_evtchns(d) ((d)->valid_evtchns)
#define shared_info(d, field) ((d)->field)

void vcpu_mark_events_pending(struct vcpu *v);
#define evtchn_check_pollers(d, port) ((void)0)

/* x86: see hvm_assert_evtchn_irq(). */
#define arch_vcpu_gets_upcall(v) (!(v)->hx_no_upcall)

/* x86-64: a 32-bit PV guest's addresses end where Xen's compat area starts. */
#define HX_COMPAT_VIRT_START 0xF5800000UL
#define is_pv_32bit_domain(d) ((d)->hx_pv32)
#define __compat_access_ok(d, addr, size) \
    ((unsigned long)(addr) + ((size) ? (size) - 1 : 0) < HX_COMPAT_VIRT_START)

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

/* Guest copies: see hx_copy_{from,to}_guest() in harness.c. */
#define guest_handle_from_ptr(ptr, t) { (t *)(ptr) }
int hx_copy_from_guest(void *dst, unsigned long gaddr, size_t n);
int hx_copy_to_guest(unsigned long gaddr, const void *src, size_t n);
#define copy_from_guest(dst, h, n) \
    hx_copy_from_guest(dst, (unsigned long)(h).p, (n) * sizeof(*(dst)))
#define copy_to_guest(h, src, n) \
    hx_copy_to_guest((unsigned long)(h).p, src, (n) * sizeof(*(src)))

/* Declared by xen/common/event_channel.h. */
int evtchn_fifo_init_control(struct evtchn_init_control *init_control);
int evtchn_fifo_expand_array(const struct evtchn_expand_array *expand_array);
void evtchn_fifo_destroy(struct domain *d);
bool evtchn_fifo_vcpu_mapped(const struct vcpu *v);
bool evtchn_fifo_vcpu_drained(const struct vcpu *v);
bool evtchn_is_per_os(const struct evtchn *chn);
int evtchn_set_notify_vcpu(struct domain *d, evtchn_port_t port,
                           struct evtchn *chn, struct vcpu *v);

#endif /* EVROUTE_HARNESS_EMUL_H */
