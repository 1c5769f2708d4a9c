#!/usr/bin/perl
# GET {admin_base_path}/metrics: the shared counters in the Prometheus text
# format, the same numbers as /tenants; read-only, on both listeners.
use strict;
use warnings;
use Test::More;
use Keystone::Test;

my $t = Keystone::Test->new;
my $port = $t->free_port;
my $admin = $t->free_port;
my $app = $t->backend(name => 'app');
$t->write_file('boom.lua', <<'EOF2');
router:add_route("GET", "/lua/boom", { handler = function(req, res) error("boom") end })
EOF2
$t->write_config(<<"EOF2");
server:
  public_addr: 127.0.0.1:$port
  admin_addr: 127.0.0.1:$admin
  workers: 2
  access_log: "off"
tenants:
  - name: shop
    base_path: /shop
    upstreams:
      - { name: app, url: "http://@{[ $app->addr ]}", health_path: /health, health_interval: 200ms, health_timeout: 100ms }
  - name: scripted
    base_path: /lua
    lua_script: boom.lua
EOF2
$t->start;

# what a scraper parses: families with HELP and TYPE first, then samples
sub scrape {
    my ($p, $path) = @_;
    my $r = $t->request($p, GET => $path);
    my (%v, %family, @bad);
    my $current = '';
    for my $line (split /\n/, $r->{body} // '') {
        if ($line =~ /^# HELP (\w+) \S/) {
            push @bad, "family $1 twice" if $family{$1}++;
            $current = $1;
        } elsif ($line =~ /^# TYPE (\w+) (counter|gauge)$/) {
            push @bad, "TYPE of $1 not after its HELP" if $1 ne $current;
        } elsif ($line =~ /^(\w+)(\{[^{}]*\})? (-?[0-9][0-9.e+-]*)$/) {
            push @bad, "sample $1 outside its family" if $1 ne $current;
            $v{$1 . ($2 // '')} = $3;
        } else {
            push @bad, "bad line: $line";
        }
    }
    return ($r, \%v, \@bad);
}

ok($t->wait_for(sub { my (undef, $v) = scrape($port, '/admin/metrics');
                      ($v->{'keystoned_upstream_state{tenant="shop",upstream="app",state="up"}'} // 0) == 1 }),
   'the upstream comes up');
is($t->request($port, GET => '/shop/a')->{status}, 200, 'proxied');
is($t->request($port, GET => '/shop/b')->{status}, 200, 'proxied');
is($t->request($port, GET => '/shop/c?status=404')->{status}, 404, 'a 404 of the upstream');
is($t->request($port, GET => '/lua/boom')->{status}, 500, 'a Lua error') for 1 .. 2;

# A worker counts a request once its answer is written, so a scrape served
# by another worker may come a moment before that: wait until they settle.
my ($r, $v, $bad);
$t->wait_for(sub {
    ($r, $v, $bad) = scrape($port, '/admin/metrics');
    ($v->{'keystoned_tenant_requests_total{tenant="shop"}'} // 0) == 3
        && ($v->{'keystoned_tenant_requests_total{tenant="scripted"}'} // 0) == 2
        && ($v->{'keystoned_upstream_active{tenant="shop",upstream="app"}'} // 1) == 0;
});
is($r->{status}, 200, 'GET /admin/metrics on the public listener');
is($r->{headers}{'content-type'}, 'text/plain; version=0.0.4; charset=utf-8', 'Prometheus text format');
is_deeply($bad, [], 'every line parses, families are grouped under HELP and TYPE');
is($v->{'keystoned_tenant_requests_total{tenant="shop"}'}, 3, 'tenant requests');
is($v->{'keystoned_tenant_responses_total{tenant="shop",class="4xx"}'}, 1, 'tenant 4xx');
is($v->{'keystoned_tenant_responses_total{tenant="shop",class="5xx"}'}, 0, 'tenant 5xx');
is($v->{'keystoned_tenant_requests_total{tenant="scripted"}'}, 2, 'the Lua tenant counts its requests');
is($v->{'keystoned_tenant_responses_total{tenant="scripted",class="5xx"}'}, 2, 'and its 500s');
is($v->{'keystoned_tenant_lua_errors_total{tenant="scripted",kind="runtime"}'}, 2, 'Lua runtime errors');
is($v->{'keystoned_tenant_lua_errors_total{tenant="scripted",kind="timeout"}'}, 0, 'no Lua timeouts');
is($v->{'keystoned_upstream_requests_total{tenant="shop",upstream="app"}'}, 3, 'upstream requests');
is($v->{'keystoned_upstream_failures_total{tenant="shop",upstream="app"}'}, 0, 'no upstream failures');
is($v->{'keystoned_upstream_active{tenant="shop",upstream="app"}'}, 0, 'nothing in flight');
is($v->{'keystoned_upstream_usable{tenant="shop",upstream="app"}'}, 1, 'usable');
is($v->{'keystoned_upstream_weight{tenant="shop",upstream="app"}'}, 100, 'weight');
ok($v->{'keystoned_upstream_checks_total{tenant="shop",upstream="app",result="ok"}'} >= 1, 'probes counted');
is($v->{'keystoned_tenant_upstreams_usable{tenant="shop"}'}, 1, 'tenant usable upstreams');
is($v->{'keystoned_generation'}, 1, 'generation');
is($v->{'keystoned_reloads_total{result="applied"}'}, 0, 'no reload yet');
ok($v->{'keystoned_requests_total'} >= 6, 'global requests');
is($v->{'keystoned_info{version="' . $r->{headers}{server} =~ s/.*\///r . '"}'} // 1, 1, 'info');
my $workers = 0;
$workers += $v->{"keystoned_workers{state=\"$_\"}"} // 0
    for qw(starting idle reading lua proxying writing keepalive closing);
is($workers, 2, 'the workers, by state');
# (the other may still be finishing the previous scrape)
cmp_ok($v->{'keystoned_workers{state="writing"}'}, '>=', 1, 'the one answering this scrape is writing');

# the same numbers as /tenants
my $json;
$t->wait_for(sub {
    $json = $t->request($port, GET => '/admin/tenants')->{json};
    !grep { $_->{name} eq 'scripted' && $_->{lua}{errors} != 2 } @{ $json->{tenants} };
});
my ($shop) = grep { $_->{name} eq 'shop' } @{ $json->{tenants} };
my ($scripted) = grep { $_->{name} eq 'scripted' } @{ $json->{tenants} };
is($shop->{requests}, 3, '/tenants: requests');
is($shop->{responses_4xx}, 1, '/tenants: 4xx');
is($scripted->{lua}{errors}, 2, '/tenants: Lua errors');
like($scripted->{lua}{script}, qr{/boom\.lua$}, '/tenants: the script');

# read-only, and on the admin listener too
($r) = scrape($admin, '/metrics');
is($r->{status}, 200, 'on the admin listener');
$r = $t->request($port, POST => '/admin/metrics', body => 'x');
is($r->{status}, 405, 'POST: 405');
is($r->{headers}{allow}, 'GET, HEAD', 'with Allow');
$t->signal('HUP');
ok($t->wait_for(sub { my (undef, $v) = scrape($port, '/admin/metrics');
                      ($v->{'keystoned_reloads_total{result="applied"}'} // 0) == 1
                      && $v->{'keystoned_generation'} == 2 }),
   'a reload is counted and the generation follows');
done_testing;
