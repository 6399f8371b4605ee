/*
 * The glue around the unmodified event_fifo.c and event_route.c: a domain
 * with vCPUs, guest pages and a channel table, and the parts of
 * event_channel.c the tests need (allocate, close, send, bind-vcpu,
 * unmask), written after Xen 4.17.5's.  Called from Rust.
 */
#include "emul.h"
#include "event_route.h"

#include <stdio.h>

unsigned long hx_warnings;
s_time_t hx_now;
unsigned int hx_locks_held;
__thread struct vcpu *hx_current;

/* Guest copies made while a lock was held (none may be). */
unsigned long hx_copies_under_lock;
/* Copies that reached Xen's own mappings of a 32-bit PV guest. */
unsigned long hx_xen_area_accesses;
/* The hx_fail_alloc_in'th allocation from now fails (0: none). */
unsigned int hx_fail_alloc_in;

#define HX_VIRQ_TIMER   0 /* a per-vCPU VIRQ */
#define HX_VIRQ_DOM_EXC 3 /* a global VIRQ */

/* The model's channel kinds (evroute_model::hypervisor::Kind). */
enum hx_kind {
    HX_FREE, HX_UNBOUND, HX_INTERDOMAIN, HX_PIRQ, HX_VIRQ_GLOBAL,
    HX_VIRQ_PER_VCPU, HX_IPI, HX_XEN_CONSUMER,
};

/* Allocations Xen holds now (made by the two files, not yet freed). */
long hx_live_allocs;

void *hx_xalloc(size_t size, bool zero)
{
    void *p;

    if ( hx_fail_alloc_in && --hx_fail_alloc_in == 0 )
        return NULL;
    p = zero ? calloc(1, size) : malloc(size);
    hx_live_allocs += !!p;
    return p;
}

/* Live vzalloc() blocks, and frees that gave one back the wrong way. */
#define HX_VBLOCKS 64
static void *hx_vblocks[HX_VBLOCKS];
unsigned long hx_wrong_frees;

static bool hx_vforget(void *p)
{
    for ( unsigned int i = 0; i < HX_VBLOCKS; i++ )
        if ( p && hx_vblocks[i] == p )
        {
            hx_vblocks[i] = NULL;
            return true;
        }
    return false;
}

void *hx_valloc(size_t size)
{
    void *p = hx_xalloc(size, true);

    for ( unsigned int i = 0; p && i < HX_VBLOCKS; i++ )
        if ( !hx_vblocks[i] )
        {
            hx_vblocks[i] = p;
            return p;
        }
    assert(!p);
    return NULL;
}

void hx_vfree(void *p)
{
    if ( p && !hx_vforget(p) )
        hx_wrong_frees++; /* not from vzalloc() */
    hx_live_allocs -= !!p;
    free(p);
}

void hx_xfree(void *p)
{
    if ( hx_vforget(p) )
        hx_wrong_frees++; /* from vzalloc(): Xen's xfree() would corrupt */
    hx_live_allocs -= !!p;
    free(p);
}

/*
 * Guest address spaces.  A 64-bit guest's address is a pointer of this
 * process (0 and HX_BAD_ADDR fault).  A 32-bit caller (PV, or HVM calling
 * in 32-bit mode) has two pages of its own: one low, one just below the compat area; other addresses below
 * 4GiB are unmapped; [HX_COMPAT_VIRT_START, 4GiB) and [HX_XEN_AREA_START,
 * HX_XEN_AREA_END) stand for Xen's own mappings for such a guest (its
 * compat area; its per-domain area, L4 slot 4 on x86-64), which Xen's
 * native access check would let a copy reach.
 */
#define HX_BAD_ADDR       0xbad0UL
#define HX_G32_LOW        0x10000UL
#define HX_G32_TOP        (HX_COMPAT_VIRT_START - PAGE_SIZE)
#define HX_XEN_AREA_START 0x0000020000000000UL
#define HX_XEN_AREA_END   0x0000028000000000UL
static uint8_t hx_g32[2][PAGE_SIZE];
/* What a copy into Xen's own area would overwrite (Xen data, in truth). */
static uint8_t hx_xen_area[2 * PAGE_SIZE];

uint8_t *hx_g32_page(unsigned int which, unsigned long *gaddr)
{
    *gaddr = which ? HX_G32_TOP : HX_G32_LOW;
    return hx_g32[!!which];
}

/* The host memory behind [gaddr, gaddr + n) of the current guest, or NULL. */
static uint8_t *hx_guest_range(unsigned long gaddr, size_t n)
{
    const struct domain *d = current->domain;
    unsigned int i;

    if ( gaddr + n < gaddr )
        return NULL;
    if ( gaddr >= HX_XEN_AREA_START && gaddr < HX_XEN_AREA_END )
    {
        /* A 64-bit caller's own page there is not mapped here. */
        if ( !(d->hx_pv32 || d->hx_compat_calls) || n > sizeof(hx_xen_area) )
            return NULL;
        /* Xen's native access check lets the copy through, into Xen. */
        hx_xen_area_accesses++;
        return hx_xen_area;
    }
    if ( !d->hx_pv32 && !d->hx_compat_calls )
        return gaddr && gaddr != HX_BAD_ADDR ? (uint8_t *)gaddr : NULL;
    /* A 32-bit PV guest's compat area up to 4GiB: Xen's (the compat M2P). */
    if ( d->hx_pv32 && gaddr + n > HX_COMPAT_VIRT_START &&
         gaddr < (1UL << 32) && n <= sizeof(hx_xen_area) )
    {
        hx_xen_area_accesses++;
        return hx_xen_area;
    }
    for ( i = 0; i < 2; i++ )
    {
        unsigned long base = i ? HX_G32_TOP : HX_G32_LOW;

        if ( gaddr >= base && gaddr + n <= base + PAGE_SIZE )
            return &hx_g32[i][gaddr - base];
    }
    return NULL;
}

/*
 * Copy n bytes between Xen's buffer and the current guest's address gaddr:
 * the bytes not copied, as Xen's copy_{to,from}_guest().
 */
static int hx_copy_guest(void *xen, unsigned long gaddr, size_t n,
                         bool to_guest)
{
    uint8_t *guest;

    if ( !n )
        return 0;
    if ( hx_locks_held )
        hx_copies_under_lock++;
    guest = hx_guest_range(gaddr, n);
    if ( !guest )
        return n;
    if ( to_guest )
        memcpy(guest, xen, n);
    else
        memcpy(xen, guest, n);
    return 0;
}

int hx_copy_from_guest(void *dst, unsigned long gaddr, size_t n)
{
    return hx_copy_guest(dst, gaddr, n, false);
}

int hx_copy_to_guest(unsigned long gaddr, const void *src, size_t n)
{
    return hx_copy_guest((void *)src, gaddr, n, true);
}

void vcpu_mark_events_pending(struct vcpu *v)
{
    if ( !__atomic_exchange_n(&v->upcall_pending, 1, __ATOMIC_SEQ_CST) )
        v->kicks++;
}

/* event_channel.c's virq_is_global() for the two VIRQs used here. */
static bool virq_is_global(unsigned int virq)
{
    return virq != HX_VIRQ_TIMER;
}

/*
 * The unpatched event_fifo.c (the benchmark's baseline) has no such
 * function; the patched one's replaces this.
 */
__attribute__((weak)) bool evtchn_fifo_vcpu_mapped(const struct vcpu *v)
{
    (void)v;
    return true;
}

__attribute__((weak)) bool evtchn_fifo_vcpu_drained(const struct vcpu *v)
{
    (void)v;
    return true;
}

/* As the patched event_channel.c. */
bool evtchn_is_per_os(const struct evtchn *chn)
{
    if ( chn->xen_consumer )
        return false;

    switch ( chn->state )
    {
    case ECS_UNBOUND:
    case ECS_INTERDOMAIN:
    case ECS_PIRQ:
        return true;
    case ECS_VIRQ:
        return virq_is_global(chn->u.virq);
    default:
        return false;
    }
}

/* As the patched event_channel.c, without the physical IRQ's bookkeeping. */
int evtchn_set_notify_vcpu(struct domain *d, evtchn_port_t port,
                           struct evtchn *chn, struct vcpu *v)
{
    (void)d;
    (void)port;
    if ( chn->xen_consumer )
        return -EINVAL;

    switch ( chn->state )
    {
    case ECS_VIRQ:
        if ( !virq_is_global(chn->u.virq) )
            return -EINVAL;
        /* fall through */
    case ECS_UNBOUND:
    case ECS_INTERDOMAIN:
    case ECS_PIRQ:
        chn->notify_vcpu_id = v->vcpu_id;
        return 0;
    default:
        return -EINVAL;
    }
}

static void *page(void)
{
    void *p = aligned_alloc(PAGE_SIZE, PAGE_SIZE);

    memset(p, 0, PAGE_SIZE);
    return p;
}

void hx_destroy(struct domain *d);

/* The domain's first vCPU that exists: the caller of hypercalls. */
static void hx_enter(struct domain *d)
{
    unsigned int i = 0;

    while ( !d->vcpu[i] )
        i++;
    hx_current = d->vcpu[i];
    hx_current->hcall_compat = d->hx_pv32 || d->hx_compat_calls;
}

/* How hx_create() builds a domain (evroute_xen_harness::DomainConfig). */
struct hx_config {
    unsigned int nr_vcpus, nr_ports, policy;
    bool fifo;            /* EVTCHNOP_init_control done; else 2-level */
    bool pv32;            /* a 32-bit PV guest */
    bool compat_calls;    /* an HVM guest calling in 32-bit mode */
    uint64_t unmapped;    /* vCPUs (of the first 64) without a control block */
    int gap;              /* a vCPU id left without a struct vcpu, or -1 */
};

/* Control block of vCPU i in gfn i; the event array in the next gfn. */
int hx_init_control(struct domain *d, unsigned int vcpu)
{
    struct evtchn_init_control ic = { .control_gfn = vcpu, .vcpu = vcpu };

    hx_enter(d);
    return evtchn_fifo_init_control(&ic);
}

/* set_opt_evtchn_route(): opt_evtchn_route is one global, as in Xen. */
struct domain *hx_create(const struct hx_config *c)
{
    struct domain *d = calloc(1, sizeof(*d));
    unsigned int i;

    opt_evtchn_route = c->policy;
    /* Each domain's clock starts at 0, as the model's does. */
    hx_now = 0;
    d->max_vcpus = c->nr_vcpus;
    d->valid_evtchns = c->nr_ports;
    d->hx_pv32 = c->pv32;
    d->hx_compat_calls = c->compat_calls;
    d->vcpu = calloc(c->nr_vcpus, sizeof(*d->vcpu));
    d->evtchn = calloc(c->nr_ports, sizeof(*d->evtchn));
    for ( i = 0; i < c->nr_ports; i++ )
        d->evtchn[i].port = i;
    d->evtchn[0].state = ECS_RESERVED;
    for ( i = 0; i < c->nr_vcpus; i++ )
    {
        if ( (int)i == c->gap )
            continue;
        d->vcpu[i] = calloc(1, sizeof(struct vcpu));
        d->vcpu[i]->vcpu_id = i;
        d->vcpu[i]->domain = d;
        d->vcpu[i]->runstate.state = RUNSTATE_running;
    }

    if ( !c->fifo )
        return d;

    for ( i = 0; i <= c->nr_vcpus && i < HX_PAGES; i++ )
        d->pages[i] = page();
    for ( i = 0; i < c->nr_vcpus; i++ )
        if ( d->vcpu[i] && !(i < 64 && (c->unmapped >> i) & 1) &&
             hx_init_control(d, i) )
            abort();
    {
        struct evtchn_expand_array ea = { .array_gfn = c->nr_vcpus };

        if ( evtchn_fifo_expand_array(&ea) )
            abort();
    }
    return d;
}

void hx_destroy(struct domain *d)
{
    unsigned int i;

    for ( i = 1; i < d->valid_evtchns; i++ )
        evtchn_route_free(d, &d->evtchn[i]);
    if ( d->evtchn_fifo )
        evtchn_fifo_destroy(d);
    evtchn_route_domain_destroy(d);
    for ( i = 0; i < d->max_vcpus; i++ )
        free(d->vcpu[i]);
    for ( i = 0; i < HX_PAGES; i++ )
        free(d->pages[i]);
    free(d->vcpu);
    free(d->evtchn);
    free(d);
}

/* get_free_port() + the bind operations: the lowest free, non-busy port. */
int hx_alloc(struct domain *d, unsigned int kind, unsigned int vcpu)
{
    unsigned int port;

    if ( vcpu >= d->max_vcpus )
        return -ENOENT;

    for ( port = 1; port < d->valid_evtchns; port++ )
    {
        struct evtchn *chn = evtchn_from_port(d, port);

        if ( chn->state != ECS_FREE )
            continue;
        if ( d->evtchn_port_ops && d->evtchn_port_ops->is_busy(d, chn) )
            continue;

        switch ( kind )
        {
        case HX_UNBOUND: chn->state = ECS_UNBOUND; break;
        case HX_INTERDOMAIN: chn->state = ECS_INTERDOMAIN; break;
        case HX_PIRQ: chn->state = ECS_PIRQ; break;
        case HX_VIRQ_GLOBAL: chn->state = ECS_VIRQ; chn->u.virq = HX_VIRQ_DOM_EXC; break;
        case HX_VIRQ_PER_VCPU: chn->state = ECS_VIRQ; chn->u.virq = HX_VIRQ_TIMER; break;
        case HX_IPI: chn->state = ECS_IPI; break;
        case HX_XEN_CONSUMER: chn->state = ECS_INTERDOMAIN; chn->xen_consumer = 1; break;
        default: return -EINVAL;
        }
        chn->notify_vcpu_id = vcpu;
        if ( d->evtchn_port_ops )
            d->evtchn_port_ops->init(d, chn);
        return port;
    }
    return -ENOSPC;
}

/* A valid port's channel if it is in use, else NULL (-EINVAL). */
static struct evtchn *bound_chn(struct domain *d, unsigned int port)
{
    struct evtchn *chn;

    if ( !port_is_valid(d, port) )
        return NULL;
    chn = evtchn_from_port(d, port);
    if ( chn->state == ECS_FREE || chn->state == ECS_RESERVED )
        return NULL;
    return chn;
}

/* evtchn_close() + evtchn_free(). */
int hx_close(struct domain *d, unsigned int port)
{
    struct evtchn *chn = bound_chn(d, port);

    if ( !chn )
        return -EINVAL;
    if ( d->evtchn_port_ops )
        d->evtchn_port_ops->clear_pending(d, chn);
    evtchn_route_free(d, chn);
    chn->state = ECS_FREE;
    chn->notify_vcpu_id = 0;
    chn->xen_consumer = 0;
    return 0;
}

/* The receiving half of evtchn_send(): evtchn_port_set_pending(). */
int hx_send(struct domain *d, unsigned int port)
{
    struct evtchn *chn = bound_chn(d, port);

    if ( !chn )
        return -EINVAL;
    d->evtchn_port_ops->set_pending(d->vcpu[chn->notify_vcpu_id], chn);
    return 0;
}

/* The benchmark's measured call: callgrind --toggle-collect=hx_bench_send. */
__attribute__((noinline)) int hx_bench_send(struct domain *d, unsigned int port)
{
    return hx_send(d, port);
}

/* evtchn_unmask(). */
int hx_unmask(struct domain *d, unsigned int port)
{
    if ( !port_is_valid(d, port) )
        return -EINVAL;
    d->evtchn_port_ops->unmask(d, evtchn_from_port(d, port));
    return 0;
}

/* evtchn_set_priority(). */
int hx_set_priority(struct domain *d, unsigned int port, unsigned int prio)
{
    if ( !port_is_valid(d, port) )
        return -EINVAL;
    return d->evtchn_port_ops->set_priority(d, evtchn_from_port(d, port), prio);
}

/* evtchn_bind_vcpu() as patched. */
int hx_bind_vcpu(struct domain *d, unsigned int port, unsigned int vcpu)
{
    struct evtchn *chn;
    int rc;

    if ( vcpu >= d->max_vcpus )
        return -ENOENT;
    if ( !port_is_valid(d, port) )
        return -EINVAL;
    chn = evtchn_from_port(d, port);
    write_lock(&d->event_lock);
    rc = evtchn_set_notify_vcpu(d, port, chn, d->vcpu[vcpu]);
    if ( !rc )
        evtchn_route_bind_vcpu(d, chn);
    write_unlock(&d->event_lock);
    return rc;
}

/* EVTCHNOP_set_vcpu_set, as the hypercall handler calls it. */
int hx_set_vcpu_set(struct domain *d, struct evtchn_set_vcpu_set *op)
{
    hx_enter(d);
    return evtchn_route_set_vcpu_set(op);
}

/* vcpu_runstate_change() and _VPF_down, for routing. */
void hx_set_runstate(struct domain *d, unsigned int vcpu, int runstate)
{
    struct vcpu *v = d->vcpu[vcpu];

    if ( runstate == RUNSTATE_offline )
        v->pause_flags |= 1UL << _VPF_down;
    else
        v->pause_flags &= ~(1UL << _VPF_down);
    v->runstate.state = runstate;
    evtchn_route_runstate(v, runstate);
}

/*
 * The benchmark's context switch: vcpu_runstate_change()'s hook alone
 * (callgrind --toggle-collect=hx_bench_runstate), and the same call without
 * it, to subtract.
 */
__attribute__((noinline)) void hx_bench_runstate(struct vcpu *v, int runstate)
{
    v->runstate.state = runstate;
    evtchn_route_runstate(v, runstate);
}

__attribute__((noinline)) void hx_bench_runstate_base(struct vcpu *v,
                                                      int runstate)
{
    v->runstate.state = runstate;
    __asm__ volatile ( "" ::: "memory" );
}

void hx_bench_switches(struct domain *d, unsigned int n)
{
    for ( unsigned int i = 0; i < n; i++ )
    {
        struct vcpu *v = d->vcpu[i % d->max_vcpus];
        int rs = i & 1 ? RUNSTATE_running : RUNSTATE_runnable;

        hx_bench_runstate(v, rs);
        hx_bench_runstate_base(v, rs);
    }
}

/* A vCPU paused (descheduled, RUNSTATE_offline) but not down. */
void hx_pause(struct domain *d, unsigned int vcpu)
{
    struct vcpu *v = d->vcpu[vcpu];

    v->runstate.state = RUNSTATE_offline;
    evtchn_route_runstate(v, RUNSTATE_offline);
}

/* _VPF_down changes without a run-state change (an INIT IPI while paused). */
void hx_set_down(struct domain *d, unsigned int vcpu, int down)
{
    if ( down )
        d->vcpu[vcpu]->pause_flags |= 1UL << _VPF_down;
    else
        d->vcpu[vcpu]->pause_flags &= ~(1UL << _VPF_down);
}

/* The scheduler reports a run state under its lock (single-threaded here). */
void sched_evtchn_route_sync(struct vcpu *v)
{
    evtchn_route_runstate(v, v->runstate.state);
}

/* An HVM callback change: does an upcall reach this vCPU? */
void hx_set_upcall(struct domain *d, unsigned int vcpu, int reaches)
{
    d->vcpu[vcpu]->hx_no_upcall = !reaches;
    evtchn_route_upcall_changed(d->vcpu[vcpu]);
}

int hx_vcpu_exists(struct domain *d, unsigned int vcpu)
{
    return vcpu < d->max_vcpus && d->vcpu[vcpu];
}

uint32_t *hx_word(struct domain *d, unsigned int port)
{
    if ( port == 0 || port >= d->valid_evtchns || !d->evtchn_fifo )
        return NULL;
    /* The event array is the page after the control blocks. */
    return (uint32_t *)d->pages[d->max_vcpus] + port;
}

void *hx_control_block(struct domain *d, unsigned int vcpu)
{
    return d->pages[vcpu];
}

uint8_t *hx_upcall(struct domain *d, unsigned int vcpu)
{
    return &d->vcpu[vcpu]->upcall_pending;
}

uint32_t hx_lastq(struct domain *d, unsigned int port)
{
    return d->evtchn[port].fifo_lastq;
}

unsigned int hx_notify_vcpu(struct domain *d, unsigned int port)
{
    return d->evtchn[port].notify_vcpu_id;
}

unsigned int hx_priority(struct domain *d, unsigned int port)
{
    return d->evtchn[port].priority;
}

/* The per-channel counts ('routed=' of the debug key): running/blocked/other. */
void hx_routed(struct domain *d, unsigned int port, uint32_t out[3])
{
    unsigned int i;

    for ( i = 0; i < 3; i++ )
        out[i] = atomic_read(&d->evtchn[port].routed[i]);
}
