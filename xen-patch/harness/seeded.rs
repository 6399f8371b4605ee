// Seeded bugs in the patched C: each puts one mistake back, by replacing a
// piece of event_fifo.c or event_route.c as the harness builds them
// (EVROUTE_SEEDED_C=<name>), and names the test that must then fail.
// `cargo xtask test` runs each and fails if one passes. Included by the
// harness's build.rs and by xtask, so the list is written once.

/// One mistake and the test that catches it.
pub struct SeededC {
    pub name: &'static str,
    /// What the mistake is (the fix it undoes).
    pub about: &'static str,
    /// `fifo` (event_fifo.c) or `route` (event_route.c).
    pub file: &'static str,
    /// Each text replaced, and its replacement.
    pub edits: &'static [(&'static str, &'static str)],
    /// Test target and test name that must fail.
    pub test: &'static str,
    pub case: &'static str,
}

pub const SEEDED_C: &[SeededC] = &[
    SeededC {
        name: "no-tail-invalidation",
        about: "a queue change leaves the old queue's stale tail",
        file: "fifo",
        edits: &[("        if ( old_q->tail == port )\n            old_q->tail = 0;\n", "")],
        test: "differential",
        case: "xen_c_matches_the_model",
    },
    SeededC {
        name: "pv32-address-unchecked",
        about: "a 32-bit PV guest's bitmap address is checked as a 64-bit guest's",
        file: "route",
        edits: &[(
            "    if ( is_pv_32bit_domain(d) && !__compat_access_ok(d, addr, len) )",
            "    if ( false )",
        )],
        test: "hostile",
        case: "pv32_bitmap_outside_the_guest_is_refused_before_any_copy",
    },
    SeededC {
        name: "compat-caller-unchecked",
        about: "an HVM guest calling in 32-bit mode may name a bitmap above 4GiB",
        file: "route",
        edits: &[(
            "    if ( current->hcall_compat &&\n         (addr >= (1ULL << 32) || len > (1ULL << 32) - addr) )",
            "    if ( false )",
        )],
        test: "hostile",
        case: "compat_caller_bitmap_above_4gib_is_refused_before_any_copy",
    },
    SeededC {
        name: "down-vcpu-chosen",
        about: "a vCPU put down while paused may still be chosen",
        file: "route",
        edits: &[(
            "    if ( !p || (p != v && test_bit(_VPF_down, &p->pause_flags)) )",
            "    if ( !p )",
        )],
        test: "hostile",
        case: "a_vcpu_put_down_while_paused_is_never_chosen",
    },
    SeededC {
        name: "pad-ignored",
        about: "a non-zero pad is accepted",
        file: "route",
        edits: &[("    if ( (op->flags & ~EVTCHN_VCPU_SET_GET) || op->pad )", "    if ( op->flags & ~EVTCHN_VCPU_SET_GET )")],
        test: "hostile",
        case: "non_zero_pad_is_refused",
    },
    SeededC {
        name: "copy-under-lock",
        about: "GET copies the set out with the event lock held",
        file: "route",
        edits: &[(
            "    read_unlock(&d->event_lock);\n    if ( rc )\n        goto out;\n\n    /* Copied out after the lock is dropped: for HVM a copy may sleep. */\n    bitmap_long_to_byte(bytes, set, op->nr_bits);\n",
            "    if ( !rc )\n    {\n        bitmap_long_to_byte(bytes, set, op->nr_bits);\n        if ( nbytes && copy_to_guest(bitmap, bytes, nbytes) )\n            rc = -EFAULT;\n    }\n    read_unlock(&d->event_lock);\n    if ( rc )\n        goto out;\n\n    bitmap_long_to_byte(bytes, set, op->nr_bits);\n",
        )],
        test: "hostile",
        case: "no_guest_copy_under_a_lock",
    },
    SeededC {
        name: "commit-before-allocation",
        about: "the out-of-line set is allocated after the bound vCPU moved",
        file: "route",
        edits: &[
            (
                "    if ( !route_inline(d) )\n    {\n        ext = route_ext_alloc(nwords);\n        if ( !ext )\n            goto out;\n    }\n",
                "",
            ),
            (
                "    if ( !rc )\n        route_write(d, chn, set, &ext);",
                "    if ( !rc && !route_inline(d) && !chn->route.ext )\n    {\n        ext = route_ext_alloc(nwords);\n        if ( !ext )\n            rc = -ENOMEM;\n    }\n    if ( !rc )\n        route_write(d, chn, set, &ext);",
            ),
        ],
        test: "hostile",
        case: "a_failed_allocation_changes_nothing",
    },
    SeededC {
        name: "vmalloc-freed-with-xfree",
        about: "a failed first set frees the vmalloc'ed routing state with xfree()",
        file: "route",
        edits: &[("    route_domain_free(rd);\n    xfree(ext);", "    xfree(rd);\n    xfree(ext);")],
        test: "hostile",
        case: "a_failed_first_set_frees_what_it_allocated",
    },
    SeededC {
        name: "route-ignores-receivable",
        about: "routing may pick a vCPU that cannot take the event",
        file: "route",
        edits: &[("    unsigned long m = read_atomic(&in->set[i]) &\n                      read_atomic(&in->receivable[i]);", "    unsigned long m = read_atomic(&in->set[i]);")],
        test: "hostile",
        case: "never_routed_to_a_vcpu_that_cannot_take_the_event",
    },
    SeededC {
        name: "sets-always-allocated",
        about: "every set is allocated, small domains' too",
        file: "route",
        edits: &[("    return d->max_vcpus <= BITS_PER_LONG;", "    return false;")],
        test: "hostile",
        case: "small_domains_keep_sets_in_the_channel",
    },
    SeededC {
        name: "no-set-budget",
        about: "a domain may allocate sets without bound",
        file: "route",
        edits: &[("         (d->evtchn_route ?: rd)->nr_ext >= opt_evtchn_route_max_sets )", "         false )")],
        test: "hostile",
        case: "sets_a_domain_may_allocate_are_bounded",
    },
    SeededC {
        name: "wrap-assumes-power-of-two",
        about: "the cyclic search wraps across words as if their number were a power of two",
        file: "route",
        edits: &[("        unsigned int i = (w0 + k) % nwords;", "        unsigned int i = (w0 + k) & (nwords - 1);")],
        test: "differential",
        case: "c_decision_matches_the_model",
    },
    SeededC {
        name: "sticky-mark",
        about: "a new load period does not decay the heavy vCPUs, so a mark stays while balanced routes it nothing",
        file: "route",
        edits: &[(
            "        if ( prev == seen )\n            break;\n",
            "        if ( prev == seen )\n            return;\n",
        )],
        test: "differential",
        case: "xen_c_matches_the_model",
    },
    SeededC {
        name: "any-stamp-is-later",
        about: "a load stamped half a wrap away counts as later than the caller's period and never decays",
        file: "route",
        edits: &[("    return ahead && ahead <= LOAD_SKEW;", "    return ahead && ahead < (1U << 23);")],
        test: "differential",
        case: "xen_c_matches_the_model",
    },
    SeededC {
        name: "load-never-decays",
        about: "a vCPU's load is not halved for the periods that passed since its last event",
        file: "route",
        edits: &[(
            "            count = elapsed >= 8 ? 0 : count >> elapsed;",
            "            count = count;",
        )],
        test: "differential",
        case: "xen_c_matches_the_model",
    },
    SeededC {
        name: "flags-checked-first",
        about: "unknown flags are refused before routing off or the 2-level ABI",
        file: "route",
        edits: &[("    if ( opt_evtchn_route == EVTCHN_ROUTE_OFF || !read_atomic(&d->evtchn_fifo) )\n        return -EOPNOTSUPP;\n\n    if ( (op->flags & ~EVTCHN_VCPU_SET_GET) || op->pad )\n        return -EINVAL;\n", "    if ( (op->flags & ~EVTCHN_VCPU_SET_GET) || op->pad )\n        return -EINVAL;\n\n    if ( opt_evtchn_route == EVTCHN_ROUTE_OFF || !read_atomic(&d->evtchn_fifo) )\n        return -EOPNOTSUPP;\n")],
        test: "differential",
        case: "set_vcpu_set_is_refused_without_fifo_or_with_routing_off",
    },
    SeededC {
        name: "counts-kept-on-free",
        about: "a freed channel keeps its per-channel routing counts",
        file: "route",
        edits: &[("        atomic_set(&chn->routed[i], 0);", "        ;")],
        test: "hostile",
        case: "per_channel_counts_follow_the_vcpu_routing_picked",
    },
    SeededC {
        name: "count-the-bound-vcpu",
        about: "a routed event is counted against the bound vCPU, not the one chosen",
        file: "fifo",
        edits: &[("    evtchn_route_count(evtchn, pick);", "    evtchn_route_count(evtchn, v);")],
        test: "hostile",
        case: "per_channel_counts_follow_the_vcpu_routing_picked",
    },
];
