package Keystone::Load;

=head1 NAME

Keystone::Load - bounded load and process probes for the fault and soak tests

=head1 SYNOPSIS

    use Keystone::Test;
    use Keystone::Load;

    my $load = Keystone::Load->start($t, port => $port, conns => 8,
        duration => 5, specs => ['GET /ok good.test', '2*GET /slow good.test']);
    ...                               # break something meanwhile
    my $r = $load->result;            # waits; the JSON report of t/loadgen
    is(Keystone::Load::failed($r), 0, 'no request failed');

    my $s = Keystone::Load::status($t);           # keystonectl status -j
    my @w = Keystone::Load::worker_pids($t);      # live children of the master
    my $n = Keystone::Load::fd_count($pid);       # entries of /proc/PID/fd
    my $kb = Keystone::Load::rss_kb($pid);        # VmRSS

=head1 DESCRIPTION

C<start> runs F<t/loadgen> (see the comment at the top of F<t/loadgen.c>)
in the background with C<-p port -c conns -d duration> and one C<-r> per
spec; C<timeout> (ms), C<rate>, C<mode> and C<requests> map to C<-t>,
C<-q>, C<-m> and C<-n>; C<events =E<gt> 1> asks for the event log, which
C<result> then returns parsed in C<< $r->{events} >> (array of
C<[start_ms, end_ms, spec, conn, outcome]>, milliseconds from C<< $r->{started_ms} >>, the wall-clock start of the run).  C<result(timeout =E<gt> s)>
waits for the run to end (default: its duration plus 30 s) and dies if
it does not, or if the report is not JSON.

C<failed($r)> is the number of requests that got no complete response
(the sum of C<< $r->{errors} >>); C<count($r, $status)> the number of
responses with that status; C<spec($r, $i)> the report of the I<i>-th
spec.  C<soak()> is true when C<KS_SOAK=1> (C<make check-soak>): the
tests then run their long versions.  C<slow()> is the factor by which
the bounds about time (an exit within 1 s, a latency, a Lua timeout that
must not reach the watchdog) stretch: 1, or C<KS_SLOW> when set, or 5
under the sanitizers (C<ASAN_OPTIONS>/C<UBSAN_OPTIONS> set, as C<make
check-sanitizers> does), which slow every process several times.

=cut

use strict;
use warnings;
use JSON::PP;
use Time::HiRes ();

sub start {
    my ($class, $t, %o) = @_;
    my $n = ++$t->{loadgen_runs};
    my $out = $t->dir . "/loadgen$n.json";
    my $err = $t->dir . "/loadgen$n.err";
    my @cmd = ($t->bin('loadgen'), '-p', $o{port}, '-c', $o{conns} // 4);
    push @cmd, '-d', $o{duration} if $o{duration};
    push @cmd, '-n', $o{requests} if $o{requests};
    push @cmd, '-t', $o{timeout} if $o{timeout};
    push @cmd, '-q', $o{rate} if $o{rate};
    push @cmd, '-m', $o{mode} if $o{mode};
    my $events = $o{events} ? $t->dir . "/loadgen$n.events" : undef;
    push @cmd, '-l', $events if $events;
    push @cmd, map { ('-r', $_) } @{ $o{specs} // [] };
    unlink $out;
    my $pid = $t->spawn(\@cmd, stdout => $out, stderr => $err);
    return bless { t => $t, pid => $pid, out => $out, err => $err, events => $events,
                   duration => $o{duration} // 0, started => Time::HiRes::time() }, $class;
}

sub pid { $_[0]{pid} }

sub result {
    my ($self, %o) = @_;
    return $self->{result} if $self->{result};
    my $t = $self->{t};
    my $left = $self->{duration} + 30 - (Time::HiRes::time() - $self->{started});
    my $st = $t->reap($self->{pid}, timeout => $o{timeout} // ($left > 5 ? $left : 5));
    die "loadgen did not finish\n" unless defined $st;
    my $json = _slurp($self->{out});
    my $r = eval { decode_json($json) }
        or die "loadgen (status $st) gave no report: $json " . _slurp($self->{err});
    if ($self->{events}) {
        open my $fh, '<', $self->{events} or die "$self->{events}: $!";
        $r->{events} = [ map { chomp; [ split / / ] } <$fh> ];
    }
    return $self->{result} = $r;
}

sub failed {
    my ($r) = @_;
    my $n = 0;
    $n += $_ for values %{ $r->{errors} };
    return $n;
}

sub count {
    my ($r, $status) = @_;
    return $r->{statuses}{$status} // 0;
}

sub spec { $_[0]{specs}[ $_[1] ] }

sub soak { ($ENV{KS_SOAK} // '') eq '1' }

sub slow {
    return $ENV{KS_SLOW} + 0 if ($ENV{KS_SLOW} // '') =~ /^\d+(?:\.\d+)?$/;
    return ($ENV{ASAN_OPTIONS} // '') ne '' || ($ENV{UBSAN_OPTIONS} // '') ne '' ? 5 : 1;
}

# ---- processes ---------------------------------------------------------

sub status {
    my ($t, $state) = @_;
    $state //= $t->dir . '/keystoned.state';
    my ($code, $out, $err) = $t->ctl('-s', $state, 'status', '-j');
    return undef unless $code == 0;
    return eval { decode_json($out) };
}

sub worker_pids {
    my ($t) = @_;
    return $t->processes_of($t->master_pid);
}

sub fd_count {
    my ($pid) = @_;
    opendir my $d, "/proc/$pid/fd" or return undef;
    my $n = grep { /^\d+$/ } readdir $d;
    closedir $d;
    return $n;
}

sub rss_kb {
    my ($pid) = @_;
    open my $fh, '<', "/proc/$pid/status" or return undef;
    while (my $line = <$fh>) {      # not $_: callers map over pids with it
        return $1 + 0 if $line =~ /^VmRSS:\s+(\d+)\s+kB/;
    }
    return undef;
}

sub _slurp {
    my ($path) = @_;
    open my $fh, '<', $path or return '';
    local $/;
    return <$fh> // '';
}

1;
