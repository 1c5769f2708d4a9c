#!/usr/bin/perl
# The hostile request corpus (t/corpus/, naming scheme in t/corpus/README):
# every file is sent as it is to a keystoned in front of a real t/backend.
# Each gets the status its name gives; a refused request reaches nothing
# upstream (the backend's request log stays as it was), and the
# connection is closed after it when the refusal says so, with the
# request sent behind it never read; an accepted one (and a refusal that
# keeps the connection) is followed by a request that is answered on the
# same connection.
use strict;
use warnings;
use Test::More;
use Keystone::Test;
use JSON::PP ();

my $t = Keystone::Test->new;
my $dir = $t->srcdir . '/t/corpus';
opendir(my $dh, $dir) or die "$dir: $!";
my @files = sort grep { /\.http$/ } readdir $dh;
closedir $dh;
cmp_ok(scalar(@files), '>=', 150, 'the corpus is there');

my $port = $t->free_port;
my $app = $t->backend(name => 'app');
# the limits the corpus is written for (t/corpus/README)
$t->write_config(<<"EOF");
server:
  public_addr: 127.0.0.1:$port
  workers: 1
  min_spare: 0
  max_spare: 1
  read_header_timeout: 1s
  read_body_timeout: 1s
  access_log: "@{[ $t->dir ]}/access.log"
limits:
  max_request_line: 1KB
  max_header_bytes: 2KB
  max_headers: 20
  max_body_bytes: 1KB
tenants:
  - name: corpus
    base_path: /a
    upstreams:
      - { name: app, url: "http://@{[ $app->addr ]}" }
EOF
my $master = $t->start;
my ($worker) = $t->processes_of($master);

my $PROBE = "GET /a/corpus-probe HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";

my $ACCESS = $t->dir . '/access.log';
# The access log lines written since byte $from.
sub access_lines {
    my ($from) = @_;
    open my $fh, '<:raw', $ACCESS or return ();
    seek $fh, $from, 0;
    my @l;
    while (my $line = <$fh>) {
        push @l, eval { JSON::PP::decode_json($line) } // { bad => $line };
    }
    return @l;
}

sub slurp {
    my ($path) = @_;
    open my $fh, '<:raw', $path or die "$path: $!";
    local $/;
    my $s = <$fh>;
    return $s // '';
}

# The responses in $raw, in order (as many complete ones as there are).
sub responses {
    my ($raw) = @_;
    my @r;
    while (length $raw) {
        my ($r, $used) = Keystone::Test::parse_response($raw, eof => 1);
        last unless $used && defined $r->{status};
        push @r, $r;
        substr($raw, 0, $used) = '';
    }
    return @r;
}


my %seen_names;
for my $file (@files) {
    my ($status, $slug, $mode) = $file =~ /^(\d{3})-([a-z0-9][a-z0-9-]*)(?:\.([a-z-]+))?\.http$/;
    if (!defined $status || $seen_names{"$slug.$status"}++) {
        fail("$file: a name as t/corpus/README says, used once");
        next;
    }
    $mode //= '';
    my $bytes = slurp("$dir/$file");
    my $before = () = $app->requests;
    my $amark = -s $ACCESS // 0;
    my ($raw, $how);
    if ($mode eq '' || $mode eq 'keep') {
        ($raw, $how) = $t->raw($port, $bytes . $PROBE, timeout => 5);
    } elsif ($mode eq 'eof' || $mode eq 'streamed-eof') {
        ($raw, $how) = $t->raw($port, $bytes, shutdown => 1, timeout => 5);
    } elsif ($mode eq 'stall' || $mode eq 'streamed-stall') {
        ($raw, $how) = $t->raw($port, $bytes, timeout => 5);
    } else {
        fail("$file: unknown mode $mode");
        next;
    }
    my @r = responses($raw);
    # the worker writes its access-log line just after the answer: wait
    # for it, so that what follows it (the backend's log) is this case's
    my @log;
    $t->wait_for(sub { @log = access_lines($amark); @log >= 1 }, timeout => 5) if @r;
    # A streamed head may reach the backend after the client had its
    # answer (its log is written by another thread): when the access log
    # says an upstream was used, wait for the backend to have logged it.
    if ($mode =~ /^streamed-/ && @log && defined $log[0]{upstream}) {
        $t->wait_for(sub { my $n = () = $app->requests; $n > $before }, timeout => 5);
    }
    my @up = $app->requests;
    my @new = @up[$before .. $#up];
    my @probe = grep { m{/a/corpus-probe } } @new;
    my $first = $r[0] // {};
    my $got = $first->{status} // 'nothing';
    my $accepted = $status =~ /^2/;
    my $stays = $accepted || $status == 404 || $mode eq 'keep';
    my $why = "got $got after " . scalar(@r) . " response(s), read ended by $how";

    # the status, and for keystoned's own answers the JSON envelope
    if ($status eq '000') {
        ok(!@r && $how eq 'eof', "$file: closed without an answer") or diag "$why: $raw";
    } else {
        ok($got eq $status, "$file: $status") or diag "$why: " . substr($raw, 0, 400);
        if (!$accepted && $got eq $status) {
            is($first->{json}{error}{code} // 0, $status, "$file: the JSON error envelope");
        }
    }
    # the connection
    if ($mode eq '' || $mode eq 'keep') {
        if ($stays) {
            ok(@r == 2 && ($r[1]{json}{target} // '') eq '/a/corpus-probe' && @probe == 1,
               "$file: the connection carries the next request") or diag "$why: " . substr($raw, 0, 400);
        } else {
            ok(@r == 1 && $how eq 'eof' && ($first->{headers}{connection} // '') eq 'close' && !@probe,
               "$file: closed, the request behind it never read") or diag "$why: " . substr($raw, 0, 400);
        }
    } elsif ($status ne '000') {
        ok(@r == 1 && $how eq 'eof', "$file: answered once and closed") or diag "$why: $raw";
    }
    # what the upstream saw
    my @case = grep { !m{/a/corpus-probe } } @new;
    if ($accepted) {
        is(scalar(@case), 1, "$file: forwarded once") or diag explain \@case;
        is($first->{json}{name} // '', 'app', "$file: answered by the upstream");
    } elsif ($mode =~ /^streamed-/) {
        # a valid head may go upstream before its body (bodies stream);
        # a body that never ends is never answered by the upstream
        ok(@case <= 1, "$file: at most its head went upstream") or diag explain \@case;
        ok(!grep({ defined $_->{json}{name} } @r), "$file: no upstream answer reached the client");
    } else {
        is(scalar(@case), 0, "$file: nothing reached the upstream") or diag explain \@case;
        if ($status ne '000') {
            # (an upstream may have been chosen, and even connected to,
            # before the body bytes that came with the head were judged)
            ok(@log >= 1 && ($log[0]{status} // 0) == $status && !defined $log[0]{upstream_status},
               "$file: logged with its status, no upstream answer") or diag explain \@log;
        }
    }
}

is(scalar($t->processes_of($master)), 1, 'one worker after the corpus');
is(($t->processes_of($master))[0], $worker, 'the same worker: none of it killed it');
my $r = $t->request($port, GET => '/a/after');
is($r->{status}, 200, 'and it serves');
unlike($t->error_log, qr/\b(?:crash|signal|AddressSanitizer|runtime error)\b/i, 'nothing alarming in the error log');

done_testing;
