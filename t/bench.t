#!/usr/bin/perl
# Smoke test of the benchmark harness: t/bench/run --quick --scenario 1,2
# starts the backend, keystoned, nginx and HAProxy, measures them and
# prints its tables.  Speed is not asserted (make check never times
# anything); the shape of the report is.  The peers are not build
# dependencies, so without them this test is skipped, never failed.
use strict;
use warnings;
use Test::More;
use File::Path qw(remove_tree);
use Keystone::Test;

my @missing = grep { !program($_) } qw(wrk nginx haproxy);
plan skip_all => "needs @missing (t/bench/run installs them when run by hand as root)" if @missing;

my $t = Keystone::Test->new;
my $run = $t->srcdir . '/t/bench/run';
my ($code, $out, $err) = $t->run([ $^X, $run, '--quick', '--scenario', '1,2', '--keep' ], timeout => 90);
is($code, 0, 't/bench/run --quick --scenario 1,2 exits 0') or diag($err);

like($out, qr/^- machine: \d+ CPUs /m, 'the report names the machine');
for my $c (16, 64) {
    my ($table) = $out =~ /^(### 1\. small GET proxied, keep-alive, C=$c\n.*?)(?=^###|\z)/ms;
    ok($table, "a table for C=$c") or next;
    like($table, qr/keystoned $c workers, floor $c processes, nginx $c worker processes, HAProxy $c threads/,
         "C=$c: every proxy gets $c workers");
    like($table, qr/^\| direct +\| +\d+ \| +[\d.]+ ms \| +[\d.]+ ms \| +[\d.]+ us \| +1\.00 \| +0 \|$/m,
         "C=$c: the direct backend measured, without errors");
    for my $peer (qw(floor nginx haproxy)) {
        like($table, qr/^\| $peer +\| +\d+ \| +[\d.]+ ms \| +[\d.]+ ms \| +[\d.]+ us \| +[\d.]+ \| +0 \|$/m,
             "C=$c: $peer measured, without errors");
    }
    # A keystoned that cannot proxy must say why it was not measured.
    like($table, qr/^\| keystoned \| (?: *\d+ \| +[\d.]+ ms \| +[\d.]+ ms \| +[\d.]+ us \| +[\d.]+ \| +0 \||not available: \S.*)$/m,
         "C=$c: keystoned measured without errors, or said why not");
    like($table, qr{^keystoned/nginx: (?:req/s x[\d.]+, p99 x[\d.]+, CPU/req (?:x[\d.]+|n/a)|n/a \(keystoned not measured\))$}m,
         "C=$c: keystoned/nginx ratio line");
    like($table, qr{^keystoned/haproxy: }m, "C=$c: keystoned/haproxy ratio line");
    like($table, qr{^keystoned/floor: }m, "C=$c: keystoned/floor ratio line");
    like($table, qr{^floor/nginx: req/s x[\d.]+, }m, "C=$c: floor/nginx ratio line");
}
# Scenario 2's floor answers "Hello World" itself (no upstream); the
# run checks each target's answer before measuring it.
my ($lua) = $out =~ /^(### 2\. Lua GET \/hello.*?)(?=^###|\z)/ms;
ok($lua, 'a table for scenario 2');
like($lua // '', qr/^\| floor +\| +\d+ \| +[\d.]+ ms \| +[\d.]+ ms \| +[\d.]+ us \| +[\d.]+ \| +0 \|$/m,
     'scenario 2: the answering floor measured, without errors');
like($lua // '', qr{^keystoned/floor: }m, 'scenario 2: keystoned/floor ratio line');
like($err, qr/^\[1 C=16\] round 1\/1 nginx +\d+ req\/s/m, 'progress lines on stderr');

# Scenarios 7 and 8 (memory and start-up, reload under load) have tables
# of their own.
my ($code2, $out2, $err2) = $t->run([ $^X, $run, '--quick', '--scenario', '7,8' ], timeout => 120);
is($code2, 0, 't/bench/run --quick --scenario 7,8 exits 0') or diag($err2);
my ($mem) = $out2 =~ /^(### 7\. memory and start-up.*?)(?=^###|\z)/ms;
ok($mem, 'a memory and start-up table');
for my $who (qw(keystoned nginx haproxy)) {
    like($mem // '', qr/^\| $who +\| +[\d.]+ ms \| +\d+ \| +\d+ \| +\d+ \| +\d+ \| +\d+ \| +0 \|$/m,
         "$who: start-up, master and worker memory measured, without errors");
}
my ($rel) = $out2 =~ /^(### 8\. reload under load.*?)(?=^###|\z)/ms;
ok($rel, 'a reload-under-load table');
# Reloading under load is a correctness target: keystoned applies them
# (a few HUPs may coalesce into one reload) and loses no request.
my ($sent, $applied, $non2xx, $sockerr) =
    ($rel // '') =~ /^\| keystoned +\| +(\d+) HUP \| +(\d+) \| +\d+ \| +\d+ \| +(\d+) \| +(\d+) \|$/m;
ok(defined $sent && $sent >= 5, 'keystoned: HUP sent every 100 ms') or diag($rel);
ok(defined $applied && $applied >= 1 && $applied <= $sent, 'keystoned: reloads applied');
is($non2xx, 0, 'keystoned: no non-2xx answer while reloading');
is($sockerr, 0, 'keystoned: no socket error while reloading');
for my $who (qw(nginx haproxy)) {
    like($rel // '', qr/^\| $who +\| +\d+ (?:HUP|USR2) \| +n\/a \| +\d+ \| +\d+ \| +\d+ \| +\d+ \|$/m,
         "$who: measured");
}

# Everything the benchmark starts names its temporary directory on its
# command line (nginx -p, haproxy -f, keystoned -c, wrk -s), so a process
# left behind, even one re-parented to init, is found by that name.
my ($dir) = $err =~ /^# test directory kept: (\S+)$/m;
ok($dir && -d $dir, '--keep kept the temporary directory') or diag($err);
if ($dir) {
    is_deeply([ processes_naming($dir) ], [], 'nothing the benchmark started is left running');
    ok(-s "$dir/nginx.conf" && -s "$dir/haproxy.cfg" && -s "$dir/keystone.yaml",
       'the generated configurations are in it');
    remove_tree($dir);
}

done_testing;

sub program {
    my ($name) = @_;
    return grep { -x "$_/$name" } split(/:/, $ENV{PATH} // ''), qw(/usr/sbin /sbin);
}

sub processes_naming {
    my ($text) = @_;
    my @found;
    opendir my $d, '/proc' or return;
    for my $pid (grep { /^\d+$/ } readdir $d) {
        open my $fh, '<', "/proc/$pid/cmdline" or next;
        local $/;
        my $cmd = <$fh> // '';
        $cmd =~ tr/\0/ /;
        push @found, "$pid: $cmd" if index($cmd, $text) >= 0;
    }
    return @found;
}
