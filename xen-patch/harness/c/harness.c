/*
 * The glue around the unmodified event_fifo.c and event_route.c: a domain
 * with vCPUs, guest pages and a channel table, and the parts of
 * event_channel.c the differential test needs (allocate, close, send,
 * bind-vcpu, unmask), written after Xen 4.17.5's.  Called from Rust.
 */
#include "emul.h"
#include "event_route.h"

#include <stdio.h>

unsigned long hx_warnings;
__thread struct vcpu *hx_current;

#define HX_VIRQ_TIMER   0 /* a per-vCPU VIRQ */
#define HX_VIRQ_DOM_EXC 3 /* a global VIRQ */

/* The model's channel kinds (evroute_model::hypervisor::Kind). */
enum hx_kind {
    HX_FREE, HX_UNBOUND, HX_INTERDOMAIN, HX_PIRQ, HX_VIRQ_GLOBAL,
    HX_VIRQ_PER_VCPU, HX_IPI, HX_XEN_CONSUMER,
};

int hx_copy(void *dst, const void *src, size_t n)
{
    if ( !n )
        return 0;
    if ( !dst || !src || (unsigned long)dst == HX_BAD_ADDR ||
         (unsigned long)src == HX_BAD_ADDR )
        return n;
    memcpy(dst, src, n);
    return 0;
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

/* As event_channel.c (patch 3). */
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

/* As event_channel.c (patch 3), without the physical IRQ's bookkeeping. */
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

/*
 * A FIFO domain (or a 2-level one if !fifo) of nr_vcpus vCPUs and nr_ports
 * valid ports, every vCPU online and running.  Sets the global option.
 */
struct domain *hx_create(unsigned int nr_vcpus, unsigned int nr_ports,
                         unsigned int policy, int fifo)
{
    struct domain *d = calloc(1, sizeof(*d));
    unsigned int i;

    opt_evtchn_route = policy;
    d->max_vcpus = nr_vcpus;
    d->valid_evtchns = nr_ports;
    d->vcpu = calloc(nr_vcpus, sizeof(*d->vcpu));
    d->evtchn = calloc(nr_ports, sizeof(*d->evtchn));
    for ( i = 0; i < nr_ports; i++ )
        d->evtchn[i].port = i;
    d->evtchn[0].state = ECS_RESERVED;
    for ( i = 0; i < nr_vcpus; i++ )
    {
        d->vcpu[i] = calloc(1, sizeof(struct vcpu));
        d->vcpu[i]->vcpu_id = i;
        d->vcpu[i]->domain = d;
    }
    if ( evtchn_route_domain_init(d) )
        abort();
    for ( i = 0; i < nr_vcpus; i++ )
        evtchn_route_runstate(d->vcpu[i], RUNSTATE_running);

    if ( !fifo )
        return d;

    /* Control block of vCPU i in gfn i; the event array in the next gfn. */
    hx_current = d->vcpu[0];
    for ( i = 0; i <= nr_vcpus && i < HX_PAGES; i++ )
        d->pages[i] = page();
    for ( i = 0; i < nr_vcpus; i++ )
    {
        struct evtchn_init_control ic = { .control_gfn = i, .offset = 0, .vcpu = i };

        if ( evtchn_fifo_init_control(&ic) )
            abort();
    }
    {
        struct evtchn_expand_array ea = { .array_gfn = nr_vcpus };

        if ( evtchn_fifo_expand_array(&ea) )
            abort();
    }
    return d;
}

void hx_destroy(struct domain *d)
{
    unsigned int i;

    for ( i = 1; i < d->valid_evtchns; i++ )
        evtchn_route_free(&d->evtchn[i]);
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
    evtchn_route_free(chn);
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

/* evtchn_bind_vcpu() as patched (patch 3). */
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
        evtchn_route_bind_vcpu(d, chn, vcpu);
    write_unlock(&d->event_lock);
    return rc;
}

/* EVTCHNOP_set_vcpu_set, as the hypercall handler calls it. */
int hx_set_vcpu_set(struct domain *d, struct evtchn_set_vcpu_set *op)
{
    hx_current = d->vcpu[0];
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
    evtchn_route_runstate(v, runstate);
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

uint32_t *hx_upcall(struct domain *d, unsigned int vcpu)
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
