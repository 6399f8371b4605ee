/*
 * Appended to event_route.c's translation unit (build.rs), so the tests
 * reach its static decision and limit without Xen exporting them.
 */

unsigned int hx_route_pick(unsigned int policy,
                           const struct evtchn_route_inputs *in)
{
    return evtchn_route_pick(policy, in);
}

void hx_set_max_sets(unsigned int n)
{
    opt_evtchn_route_max_sets = n;
}
