package Keystone::Test;

=head1 NAME

Keystone::Test - harness for the keystoned end-to-end tests (t/*.t)

=head1 SYNOPSIS

    use Test::More;
    use Keystone::Test;

    my $t    = Keystone::Test->new;
    my $port = $t->free_port;
    my $app  = $t->backend(name => 'app-1');
    $t->write_config(<<"EOF");
    server:
      addr: "127.0.0.1:$port"
    ...  upstream: http://127.0.0.1:@{[ $app->port ]}
    EOF
    $t->start;                      # polls GET /admin/health on $port

    my $r = $t->request($port, GET => '/hello');
    is($r->{status}, 200);
    is($r->{json}{name}, 'app-1');  # t/backend echoes the request as JSON

    my $c = $t->conn($port);        # keep-alive
    $c->send("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    is($c->response->{status}, 200);

    done_testing;                   # everything started is stopped

=head1 DESCRIPTION

Each test gets a temporary directory, free loopback ports, real upstream
processes (F<t/backend>, see the comment at the top of F<t/backend.c>) and
a B<keystoned> started in the foreground.  Nothing waits with a fixed
sleep where a poll works (20 ms steps up to a deadline), every read has a
timeout, and every process the harness started is stopped at the end,
even when the test dies: TERM, then KILL 5 s later.  A test that runs
longer than C<KS_TEST_TIMEOUT> seconds (default 300; 0 disables it) is
failed and cleaned up (this uses C<alarm>, so tests should not).

The temporary directory is removed at the end unless C<KS_KEEP=1> is set
or the test failed; then its path is printed with C<diag>.

=head2 Environment

C<KEYSTONED>, C<KEYSTONECTL>, C<KS_BACKEND>, C<KS_LOADGEN> (programs),
C<KS_SRCDIR> (the source tree), C<KS_MANDOC> (mandoc).  C<make check> sets them all; when
one is unset it defaults to the build tree this module sits in
(F<keystoned/keystoned>, F<keystoned/keystonectl>, F<t/backend>), so
C<perl -I t/lib t/foo.t> works from an in-tree build.

=head2 The harness

=over

=item C<< Keystone::Test->new(prefix => 'keystone-test') >>

New harness with its own temporary directory, named C<PREFIX-XXXXXX>
under C<$TMPDIR> (the benchmark scripts use their own prefix, so that
clearing stale test directories never pulls one from under a long run).

=item C<< $t->dir >>, C<< $t->bin($name) >>, C<< $t->srcdir >>

The temporary directory; the path of C<keystoned>, C<keystonectl>,
C<backend>, C<loadgen> or C<mandoc>; the source directory.

=item C<< $t->free_port >>

A free port on 127.0.0.1, never the same twice in one test, picked at
random below the kernel's ephemeral range (so that no outgoing
connection can be using it as its source port).

=item C<< $t->write_file($name, $content) >>, C<< $t->write_config($yaml) >>

Write a file in the temporary directory (creating subdirectories) and
return its path.  C<write_config> writes F<keystone.yaml>.

=item C<< $t->backend(name => 'app-1', args => [...], port => N, health => N) >>

Start F<t/backend> C<-v -n NAME -r DIR/NAME.requests -l 127.0.0.1:PORT>
(C<-H N> with C<health>), wait up to 10 s for its C<listening> line and
return a L</Backend> object.  PORT is C<port> when given (e.g. to restart
a backend where it was), else one from C<free_port>.  Its stderr goes to
F<DIR/NAME.log>; C<name> defaults to C<backend1>, C<backend2>, ...

=item C<< $t->start(%opts) >>

Run C<$KEYSTONED -f -c DIR/keystone.yaml @{$opts{args}}> with stderr (and
stdout) appended to F<DIR/error.log>, then poll every 20 ms until
C<GET /admin/health> answers on the public port; return the master pid.
Options: C<port> (default: the first port C<free_port> handed out to
the test),
C<path> (default C</admin/health>), C<tcp =E<gt> 1> (a TCP connect is
enough), C<host> (default C<localhost>), C<config>, C<args>,
C<timeout> (default 10), C<wait =E<gt> 0> (do not poll at all).  Dies,
with the error log in the message, if keystoned exits or does not answer
in time.  When C<KS_WRAPPER> is set, its words go before the command
(C<KS_WRAPPER='valgrind -q ...'>, see F<t/check-valgrind>); the pid is
still keystoned's, as valgrind runs the program in its own process.

=item C<< $t->stop(timeout => 10) >>, C<< $t->master_pid >>, C<< $t->signal('HUP') >>

C<stop> sends TERM to the master, waits, sends KILL after C<timeout>
seconds and returns the wait status (C<$?> style: C<<< >> 8 >>> is the
exit code).  C<signal> sends a signal to the master.

=item C<< $t->error_log >>, C<< $t->log_mark >>, C<< $t->wait_log(qr/.../, timeout => 5, from => $mark) >>

Contents of F<DIR/error.log> (from byte C<$mark> when given).
C<log_mark> is its current size, so C<wait_log(..., from =E<gt> $mark)>
only looks at lines written after it.  C<wait_log> returns the first
matching line (true) or false at the deadline.

=item C<< $t->wait_for(sub { ... }, timeout => 5) >>

Call the sub every 20 ms until it returns true; return that value, or
false at the deadline.

=item C<< $t->raw($port, $bytes, %opts) >>

Connect to 127.0.0.1:$port, send C<$bytes> (or with
C<parts =E<gt> [...]> each part with C<delay> seconds between, default
0.05), and read until the server closes, C<timeout> seconds pass
(default 5), or with C<one =E<gt> 1> one complete response was read
(C<head =E<gt> 1> when it answers a HEAD).  C<shutdown =E<gt> 1>
half-closes after sending.  Returns the bytes received; in list context
also how the read ended: C<eof>, C<reset>, C<timeout>, C<complete>, or
C<connect> when nothing listens there.

=item C<< $t->request($port, $method, $path, %opts) >>

Send one request and return the parsed response (see L</Responses>).
Options: C<host> (default C<localhost>; C<undef> sends no Host),
C<headers> (an array ref C<[Name =E<gt> value, ...]>, sent in order, or
a hash ref), C<body> (adds Content-Length unless the headers frame it),
C<chunked =E<gt> 1> (send the body chunked), C<version> (default
C<HTTP/1.1>), C<keepalive =E<gt> 1> (do not add C<Connection: close>),
C<timeout> (default 5).

=item C<< $t->conn($port) >>

A keep-alive client, see L</Connections>; dies if it cannot connect.

=item C<< $t->ctl(@args) >>, C<< $t->run([$program, @args], timeout => 10, stdin => $bytes) >>

Run keystonectl (or any program) to completion and return
C<($exit_code, $stdout, $stderr)>; a program killed by a signal gives
128 + signal number, one still running at the deadline is killed and
gives -1.

=item C<< $t->spawn([$program, @args], stdout => FILE, stderr => FILE) >>, C<< $t->terminate($pid, timeout => 10) >>, C<< $t->reap($pid, timeout => 10) >>

Start any other long-running program (stdin from F</dev/null>, output
appended to the files, F</dev/null> by default) and return its pid; the
cleanup stops it like every other process.  C<terminate> stops one the
way the cleanup does (TERM, wait, KILL) and returns its wait status;
C<reap> waits for one to exit by itself and returns its wait status, or
undef at the deadline.

=item C<< $t->processes_of($pid) >>, C<< $t->alive($pid) >>, C<< $t->track_pid($pid) >>

The live (not zombie) processes whose parent is C<$pid> (their number in
scalar context); whether C<$pid>
lives; have the cleanup stop C<$pid> too.

=back

=head2 Backend

C<< $b->port >>, C<< $b->pid >>, C<< $b->name >>, C<< $b->addr >>
(C<127.0.0.1:PORT>), C<< $b->requests >> (request lines of its log; the
control paths C</__stats> and C</__health> are not logged),
C<< $b->stats >> (C</__stats> decoded: connections, requests, open),
C<< $b->set_health(503) >>, C<< $b->stop >> (TERM, wait, KILL; returns
the wait status), C<< $b->kill('KILL') >> (send a signal and return),
C<< $b->wait(timeout => 5) >> (wait for it to exit; status or undef),
C<< $b->alive >>.

=head2 Responses

C<request>, C<< $c->response >> and C<parse_response> return a hash ref:
C<status>, C<reason>, C<version>, C<headers> (lower-case name to value,
the last one wins), C<header_list> (C<[[Name, value], ...]> as
received), C<body> (de-chunked), C<chunked>, C<trailers> (lower-case
name to value), C<interim> (the 1xx responses before it), C<json> (the
body decoded when it is JSON), C<raw> (every byte received for it).
When no complete response arrived, C<status> is undef, C<error> says
why (C<timeout>, C<eof>, C<reset>, C<malformed>, C<connect>) and C<raw> holds what
did arrive.

C<Keystone::Test::parse_response($bytes, head =E<gt> 1, eof =E<gt> 1)>
parses the first response in C<$bytes>; in list context it also returns
the number of bytes it used (0 when incomplete).

=head2 Connections

    my $c = $t->conn($port);
    $c->send($bytes);
    my $r = $c->response(timeout => 5, head => 0);
    my $r = $c->request(GET => '/x', headers => [...]);  # send + response
    my $bytes = $c->read_raw(timeout => 1);  # whatever arrives
    my $head = $c->read_until(qr/\r\n\r\n/);   # up to the match, or undef
    my $frame = $c->read_bytes(7);               # up to 7 bytes (fewer at EOF)
    ok($c->closed_by_peer(timeout => 1));    # EOF or RST seen
    $c->close;

Bytes received after a response stay buffered for the next call, so
pipelined responses are read one by one.

=cut

use strict;
use warnings;

use Cwd qw(abs_path);
use Errno qw(EINTR EAGAIN);
use File::Basename qw(dirname);
use File::Path qw(make_path remove_tree);
use File::Temp qw(tempdir);
use IO::Select;
use IO::Socket::IP;
use JSON::PP;
use POSIX qw(WNOHANG);
use Scalar::Util qw(weaken refaddr);
use Test::More ();
use Time::HiRes ();

our $VERSION = '1.0';

my $POLL = 0.02;
my %LIVE;           # refaddr => weak ref of every harness, for END
my @DIRS;           # temporary directories, removed at END if all passed
my $OWNER = $$;     # a forked child must not clean up
my $ROOT = abs_path(dirname(__FILE__) . '/../../..');

my %BIN = (
    keystoned   => [ KEYSTONED   => "$ROOT/keystoned/keystoned" ],
    keystonectl => [ KEYSTONECTL => "$ROOT/keystoned/keystonectl" ],
    backend     => [ KS_BACKEND  => "$ROOT/t/backend" ],
    loadgen     => [ KS_LOADGEN  => "$ROOT/t/loadgen" ],
    mandoc      => [ KS_MANDOC   => 'mandoc' ],
);

sub _now { Time::HiRes::time() }

sub new {
    my ($class, %opts) = @_;
    my $dir = tempdir(($opts{prefix} // 'keystone-test') . '-XXXXXX', TMPDIR => 1, CLEANUP => 0);
    my $self = bless {
        dir      => $dir,
        owner    => $$,
        ports    => [],
        seen     => {},
        pids     => {},     # pid => what, stopped at cleanup
        status   => {},     # pid => wait status, once reaped
        backends => 0,
        master   => undef,
    }, $class;
    push @DIRS, $dir;
    $LIVE{ refaddr $self } = $self;
    weaken $LIVE{ refaddr $self };

    $SIG{PIPE} = 'IGNORE';
    for my $sig (qw(INT TERM HUP)) {
        $SIG{$sig} = sub { Test::More::diag("caught SIG$sig"); exit 1 }
            if !defined $SIG{$sig} || $SIG{$sig} eq '' || $SIG{$sig} eq 'DEFAULT';
    }
    my $limit = $ENV{KS_TEST_TIMEOUT} // 300;
    if ($limit > 0) {
        $SIG{ALRM} = sub {
            Test::More::ok(0, "test finished within $limit s (KS_TEST_TIMEOUT)");
            exit 1;
        };
        alarm $limit;
    }
    return $self;
}

sub dir    { $_[0]{dir} }
sub srcdir { $ENV{KS_SRCDIR} || $ROOT }

sub bin {
    my ($self, $name) = @_;
    my $b = $BIN{$name} or die "unknown program $name";
    my $v = $ENV{ $b->[0] };
    return defined $v && $v ne '' ? $v : $b->[1];
}

sub free_port {
    my ($self) = @_;
    my $port = $self->_pick_port;
    push @{ $self->{ports} }, $port;    # the first one is start's default
    return $port;
}

# Ports come from below the kernel's ephemeral range: a port bound with
# port 0 lies inside it, and an outgoing connection (keystoned to an
# upstream, a test client) may take that very port as its source before
# the test gets to listen on it.
sub _port_window {
    my $low = 32768;
    if (open my $fh, '<', '/proc/sys/net/ipv4/ip_local_port_range') {
        ($low) = split ' ', scalar <$fh>;
        close $fh;
    }
    return (10000, $low - 1) if $low > 11000;
    return (1024, 65535);    # an odd range: fall back to the whole space
}

sub _pick_port {
    my ($self) = @_;
    my ($lo, $hi) = _port_window();
    for (1 .. 500) {
        my $port = $lo + int(rand($hi - $lo + 1));
        next if $self->{seen}{$port};
        my $s = IO::Socket::IP->new(
            LocalHost => '127.0.0.1', LocalPort => $port, Proto => 'tcp',
            ReuseAddr => 1,
        ) or next;
        close $s;
        $self->{seen}{$port} = 1;
        return $port;
    }
    die "no free port found in $lo..$hi";
}

sub write_file {
    my ($self, $name, $content) = @_;
    my $path = "$self->{dir}/$name";
    make_path(dirname($path));
    open my $fh, '>', $path or die "$path: $!";
    binmode $fh;
    print {$fh} $content;
    close $fh or die "$path: $!";
    return $path;
}

sub write_config {
    my ($self, $yaml) = @_;
    return $self->write_file('keystone.yaml', $yaml);
}

sub _slurp {
    my ($path, $from) = @_;
    open my $fh, '<', $path or return '';
    binmode $fh;
    seek $fh, $from, 0 if $from;
    local $/;
    my $s = <$fh>;
    return $s // '';
}

sub wait_for {
    my ($self, $cond, %o) = @_;
    my $deadline = _now() + ($o{timeout} // 5);
    my $interval = $o{interval} // $POLL;
    while (1) {
        my $v = $cond->();
        return $v if $v;
        return 0 if _now() >= $deadline;
        Time::HiRes::sleep($interval);
    }
}

# ---- processes ---------------------------------------------------------

# Fork and exec $cmd with stdin from /dev/null; stdout to a file or to a
# pipe (returned), stderr to a file.  The child never runs Perl END code.
sub _spawn {
    my ($self, $cmd, %o) = @_;
    my ($r, $w);
    if ($o{stdout_pipe}) {
        pipe($r, $w) or die "pipe: $!";
    }
    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if ($pid == 0) {
        eval {
            close $r if $r;
            open STDIN, '<', '/dev/null' or die "stdin: $!";
            if ($w) {
                open STDOUT, '>&', $w or die "stdout: $!";
            } else {
                open STDOUT, '>>', $o{stdout} // '/dev/null' or die "stdout: $!";
            }
            open STDERR, '>>', $o{stderr} // '/dev/null' or die "stderr: $!";
            exec { $cmd->[0] } @$cmd or die "exec $cmd->[0]: $!\n";
        };
        print STDERR $@;
        POSIX::_exit(127);
    }
    close $w if $w;
    delete $self->{status}{$pid};   # pids are reused: forget an earlier child's status
    $self->{pids}{$pid} = $o{what} // $cmd->[0];
    return ($pid, $r);
}

sub spawn {
    my ($self, $cmd, %o) = @_;
    my ($pid) = $self->_spawn($cmd, stdout => $o{stdout}, stderr => $o{stderr});
    return $pid;
}

sub terminate {
    my ($self, $pid, %o) = @_;
    return $self->_terminate($pid, $o{timeout} // 10);
}

sub reap {
    my ($self, $pid, %o) = @_;
    return $self->_wait_gone($pid, $o{timeout} // 10);
}

sub track_pid {
    my ($self, $pid) = @_;
    $self->{pids}{$pid} //= 'tracked';
    return $pid;
}

# Reap $pid if it is our child and has exited.  True when it is gone.
sub _reaped {
    my ($self, $pid) = @_;
    return 1 if exists $self->{status}{$pid};
    my $r = waitpid($pid, WNOHANG);
    if ($r == $pid) {
        $self->{status}{$pid} = $?;
        delete $self->{pids}{$pid};
        return 1;
    }
    return 0 if $r == 0;
    # Not our child: look at it from outside.
    return !_proc_alive($pid);
}

sub _proc_alive {
    my ($pid) = @_;
    return 0 unless kill 0, $pid;
    open my $fh, '<', "/proc/$pid/stat" or return 0;
    my $stat = <$fh> // '';
    my ($state) = $stat =~ /\)\s+(\S)/s;
    return defined $state && $state ne 'Z' && $state ne 'X';
}

sub alive {
    my ($self, $pid) = @_;
    return 0 unless $pid;
    return !$self->_reaped($pid);
}

# Wait until $pid is gone; its wait status (0 for a process not ours), or
# undef at the deadline.
sub _wait_gone {
    my ($self, $pid, $timeout) = @_;
    my $gone = $self->wait_for(sub { $self->_reaped($pid) },
                               timeout => $timeout, interval => $POLL);
    return undef unless $gone;
    return $self->{status}{$pid} // 0;
}

# TERM (or $sig), wait, KILL: the way every process is stopped.
sub _terminate {
    my ($self, $pid, $timeout, $sig) = @_;
    return $self->{status}{$pid} // 0 unless $self->alive($pid);
    kill $sig // 'TERM', $pid;
    my $st = $self->_wait_gone($pid, $timeout);
    return $st if defined $st;
    kill 'KILL', $pid;
    return $self->_wait_gone($pid, 5);
}

sub processes_of {
    my ($self, $ppid) = @_;
    my @kids;
    opendir my $d, '/proc' or return;
    for my $pid (grep { /^\d+$/ } readdir $d) {
        open my $fh, '<', "/proc/$pid/stat" or next;
        my $stat = <$fh> // next;
        my ($state, $pp) = $stat =~ /\)\s+(\S)\s+(\d+)/s or next;
        push @kids, $pid + 0 if $pp == $ppid && $state ne 'Z' && $state ne 'X';
    }
    closedir $d;
    my @sorted = sort { $a <=> $b } @kids;
    return wantarray ? @sorted : scalar @sorted;   # sort in scalar context is undefined
}

sub run {
    my ($self, $cmd, %o) = @_;
    $self->{runs}++;
    my $base = "$self->{dir}/.run$self->{runs}";
    my $in = "$base.in";
    open my $fh, '>', $in or die "$in: $!";
    binmode $fh;
    print {$fh} $o{stdin} // '';
    close $fh;
    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if ($pid == 0) {
        eval {
            open STDIN, '<', $in or die;
            open STDOUT, '>', "$base.out" or die;
            open STDERR, '>', "$base.err" or die;
            exec { $cmd->[0] } @$cmd or die "exec $cmd->[0]: $!\n";
        };
        print STDERR $@;
        POSIX::_exit(127);
    }
    delete $self->{status}{$pid};
    $self->{pids}{$pid} = $cmd->[0];
    my $st = $self->_wait_gone($pid, $o{timeout} // 10);
    my $code;
    if (!defined $st) {
        kill 'KILL', $pid;
        $self->_wait_gone($pid, 5);
        $code = -1;
    } else {
        $code = ($st & 127) ? 128 + ($st & 127) : $st >> 8;
    }
    my ($out, $err) = (_slurp("$base.out"), _slurp("$base.err"));
    unlink $in, "$base.out", "$base.err";
    return ($code, $out, $err);
}

sub ctl {
    my ($self, @args) = @_;
    return $self->run([ $self->bin('keystonectl'), @args ]);
}

# ---- backends ----------------------------------------------------------

# The body t/backend sends for ?size=N: N bytes of "abc...xyz0123456789\n".
sub backend_body {
    my ($n) = @_;
    my $p = "abcdefghijklmnopqrstuvwxyz0123456789\n";
    return substr($p x (int($n / length $p) + 1), 0, $n);
}

sub backend {
    my ($self, %o) = @_;
    my $name = $o{name} // 'backend' . ++$self->{backends};
    # The port comes from free_port unless given, so that a backend never
    # takes a port this test handed out for keystoned; a port taken by
    # someone else in between just means another try.
    for my $try (1 .. 5) {
        my $port = $o{port} // $self->_pick_port;
        my $b = $self->_backend_on($name, $port, %o);
        return $b if ref $b;
        die $b if defined $o{port} || $try == 5 || $b !~ /cannot listen/;
    }
}

sub _backend_on {
    my ($self, $name, $port, %o) = @_;
    my @cmd = ($self->bin('backend'), '-v', '-n', $name,
               '-r', "$self->{dir}/$name.requests", '-l', "127.0.0.1:$port");
    push @cmd, '-H', $o{health} if defined $o{health};
    push @cmd, @{ $o{args} // [] };
    my $log = "$self->{dir}/$name.log";
    my $mark = -s $log // 0;
    my ($pid, $out) = $self->_spawn(\@cmd, stdout_pipe => 1, stderr => $log,
                                    what => "backend $name");
    my $line = '';
    my $sel = IO::Select->new($out);
    my $deadline = _now() + ($o{timeout} // 10);
    while ($line !~ /\n/) {
        my $left = $deadline - _now();
        last if $left <= 0;
        next unless $sel->can_read($left);
        my $n = sysread($out, $line, 512, length $line);
        next if !defined $n && $! == EINTR;
        last unless $n;
    }
    close $out;
    my ($got) = $line =~ /^listening \S+:(\d+)\n/;
    unless ($got) {
        $self->_terminate($pid, 2);
        return "backend $name did not start (got '$line'): " . _slurp($log, $mark);
    }
    my $b = bless { t => $self, name => $name, pid => $pid, port => $got + 0,
                    log => "$self->{dir}/$name.requests" },
        'Keystone::Test::Backend';
    weaken $b->{t};
    return $b;
}

# ---- keystoned ---------------------------------------------------------

sub master_pid { $_[0]{master} }

sub _error_log_path { "$_[0]{dir}/error.log" }

sub error_log {
    my ($self, $from) = @_;
    return _slurp($self->_error_log_path, $from);
}

sub log_mark {
    my ($self) = @_;
    my $size = -s $self->_error_log_path;
    return $size // 0;
}

sub wait_log {
    my ($self, $re, %o) = @_;
    my $found;
    $self->wait_for(sub {
        for my $l (split /\n/, $self->error_log($o{from})) {
            return $found = $l if $l =~ $re;
        }
        return 0;
    }, timeout => $o{timeout} // 5);
    return $found // 0;
}

sub start {
    my ($self, %o) = @_;
    die "keystoned already running (pid $self->{master})"
        if $self->{master} && $self->alive($self->{master});
    my $config = $o{config} // "$self->{dir}/keystone.yaml";
    my @cmd = (_wrapper(), $self->bin('keystoned'), '-f', '-c', $config, @{ $o{args} // [] });
    my ($pid) = $self->_spawn(\@cmd, stdout => $self->_error_log_path,
                              stderr => $self->_error_log_path,
                              what => 'keystoned');
    $self->{master} = $pid;
    return $pid if defined $o{wait} && !$o{wait};

    my $port = $o{port} // $self->{ports}[0]
        // die "start: no port to poll (give port => N or call free_port first)";
    my $path = $o{path} // '/admin/health';
    my $host = $o{host} // 'localhost';
    my $timeout = $o{timeout} // 10;
    my $ready = $self->wait_for(sub {
        return 'dead' unless $self->alive($pid);
        my $s = _connect($port, 1) or return 0;
        if ($o{tcp}) { close $s; return 'ready' }
        _send_all($s, "GET $path HTTP/1.1\r\nHost: $host\r\nConnection: close\r\n\r\n", 1);
        my $got = '';
        _read_until($s, \$got, _now() + 1, sub { $got =~ /\r?\n\r?\n/ });
        close $s;
        return $got =~ m{^HTTP/1\.[01] \d{3}} ? 'ready' : 0;
    }, timeout => $timeout);
    return $pid if $ready && $ready eq 'ready';
    my $why = $ready ? "exited (status " . ($self->{status}{$pid} // '?') . ")"
                     : "did not answer on port $port within $timeout s";
    die "keystoned $why; error log:\n" . $self->error_log;
}

# KS_WRAPPER: words to run keystoned under (t/check-valgrind)
sub _wrapper {
    my $w = $ENV{KS_WRAPPER} // '';
    return grep { length } split ' ', $w;
}

sub signal {
    my ($self, $sig) = @_;
    return kill $sig, $self->{master} if $self->{master};
    return 0;
}

sub stop {
    my ($self, %o) = @_;
    my $pid = $self->{master} or return undef;
    return $self->_terminate($pid, $o{timeout} // 10);
}

# ---- sockets -----------------------------------------------------------

sub _connect {
    my ($port, $timeout) = @_;
    my $s = IO::Socket::IP->new(
        PeerHost => '127.0.0.1', PeerPort => $port, Proto => 'tcp',
        Timeout => $timeout // 5,
    ) or return undef;
    binmode $s;
    $s->blocking(0);
    return $s;
}

# Write everything before the deadline; false on error (the peer closed).
sub _send_all {
    my ($s, $bytes, $timeout) = @_;
    my $deadline = _now() + ($timeout // 5);
    my $sel = IO::Select->new($s);
    my $off = 0;
    while ($off < length $bytes) {
        my $n = syswrite($s, $bytes, length($bytes) - $off, $off);
        if (defined $n) { $off += $n; next }
        return 0 unless $! == EAGAIN || $! == EINTR;
        my $left = $deadline - _now();
        return 0 if $left <= 0;
        $sel->can_write($left);
    }
    return 1;
}

# Append to $$buf until $done->() is true, EOF, error or the deadline.
# Returns 'complete', 'eof', 'reset' or 'timeout'.
sub _read_until {
    my ($s, $buf, $deadline, $done) = @_;
    my $sel = IO::Select->new($s);
    while (1) {
        return 'complete' if $done && $done->();
        my $left = $deadline - _now();
        return 'timeout' if $left <= 0;
        next unless $sel->can_read($left);
        my $n = sysread($s, $$buf, 65536, length $$buf);
        if (!defined $n) {
            next if $! == EAGAIN || $! == EINTR;
            return 'reset';
        }
        return 'eof' if $n == 0;
    }
}

sub raw {
    my ($self, $port, $bytes, %o) = @_;
    my $timeout = $o{timeout} // 5;
    my $s = _connect($port, $timeout) or return wantarray ? ('', 'connect') : '';
    my @parts = $o{parts} ? @{ $o{parts} } : ($bytes // '');
    for my $i (0 .. $#parts) {
        Time::HiRes::sleep($o{delay} // 0.05) if $i;
        last unless _send_all($s, $parts[$i], $timeout);
    }
    shutdown($s, 1) if $o{shutdown};
    my $got = '';
    my $done = $o{one} ? sub { (parse_response($got, head => $o{head}))[0] } : undef;
    my $how = _read_until($s, \$got, _now() + $timeout, $done);
    close $s;
    return wantarray ? ($got, $how) : $got;
}

sub _pairs {
    my ($h) = @_;
    return () unless $h;
    return map { [ $_, $h->{$_} ] } sort keys %$h if ref $h eq 'HASH';
    my @l = @$h;
    my @p;
    push @p, [ splice @l, 0, 2 ] while @l;
    return @p;
}

sub build_request {
    my ($method, $path, %o) = @_;
    my @h = _pairs($o{headers});
    my %has = map { lc $_->[0] => 1 } @h;
    my @out;
    unless ($has{host} || (exists $o{host} && !defined $o{host})) {
        push @out, [ Host => $o{host} // 'localhost' ];
    }
    push @out, @h;
    my $body = $o{body};
    if (defined $body) {
        if ($o{chunked}) {
            push @out, [ 'Transfer-Encoding' => 'chunked' ] unless $has{'transfer-encoding'};
            $body = (length $body ? sprintf("%x\r\n%s\r\n", length $body, $body) : '')
                  . "0\r\n\r\n";
        } elsif (!$has{'content-length'} && !$has{'transfer-encoding'}) {
            push @out, [ 'Content-Length' => length $body ];
        }
    }
    push @out, [ Connection => 'close' ] unless $o{keepalive} || $has{connection};
    return "$method $path " . ($o{version} // 'HTTP/1.1') . "\r\n"
         . join('', map { "$_->[0]: $_->[1]\r\n" } @out) . "\r\n" . ($body // '');
}

sub request {
    my ($self, $port, $method, $path, %o) = @_;
    my $c = eval { $self->conn($port, timeout => $o{timeout}) }
        or return { status => undef, error => 'connect', raw => '',
                    headers => {}, header_list => [], body => '' };
    $c->send(build_request($method, $path, %o));
    my $r = $c->response(timeout => $o{timeout}, head => $method eq 'HEAD');
    $c->close;
    return $r;
}

sub conn {
    my ($self, $port, %o) = @_;
    my $s = _connect($port, $o{timeout} // 5) or die "connect 127.0.0.1:$port: $!";
    return bless { s => $s, buf => '', eof => 0, heads => [] }, 'Keystone::Test::Conn';
}

# ---- response parsing --------------------------------------------------

sub parse_response {
    my ($buf, %o) = @_;
    my ($pos, @interim) = (0);
    while (1) {
        pos($buf) = $pos;
        return _incomplete($buf, %o) unless $buf =~ /\G(.*?)\r?\n\r?\n/gs;
        my $head = $1;
        my $body_start = pos($buf);
        my ($status_line, @lines) = split /\r?\n/, $head;
        my ($version, $status, $reason) =
            ($status_line // '') =~ m{^(HTTP/\d\.\d) (\d{3})(?: (.*))?$};
        return _incomplete($buf, %o, malformed => 1) unless $status;
        my (%h, @list);
        for (@lines) {
            my ($n, $v) = /^([^:]+):[ \t]*(.*?)[ \t]*$/s or next;
            push @list, [ $n, $v ];
            $h{ lc $n } = $v;
        }
        my $r = { version => $version, status => $status + 0,
                  reason => $reason // '', headers => \%h,
                  header_list => \@list, body => '', trailers => {},
                  chunked => 0 };
        if ($status >= 100 && $status < 200 && $status != 101) {
            $r->{raw} = substr($buf, $pos, $body_start - $pos);
            push @interim, $r;
            $pos = $body_start;
            next;
        }
        $r->{interim} = \@interim;
        my $end;
        if ($o{head} || $status < 200 || $status == 204 || $status == 304) {
            $end = $body_start;
        } elsif (($h{'transfer-encoding'} // '') =~ /chunked\s*$/i) {
            $r->{chunked} = 1;
            my $p = $body_start;
            while (1) {
                my $nl = index($buf, "\n", $p);
                return _incomplete($buf, %o) if $nl < 0;
                my ($hex) = substr($buf, $p, $nl - $p) =~ /^([0-9a-fA-F]+)/
                    or return _incomplete($buf, %o, malformed => 1);
                my $size = hex $hex;
                $p = $nl + 1;
                if ($size == 0) {
                    while (1) {
                        my $e = index($buf, "\n", $p);
                        return _incomplete($buf, %o) if $e < 0;
                        my $line = substr($buf, $p, $e - $p);
                        $p = $e + 1;
                        $line =~ s/\r$//;
                        last if $line eq '';
                        $r->{trailers}{ lc $1 } = $2 if $line =~ /^([^:]+):[ \t]*(.*?)[ \t]*$/;
                    }
                    last;
                }
                return _incomplete($buf, %o) if length($buf) < $p + $size + 1;
                $r->{body} .= substr($buf, $p, $size);
                $p += $size;
                my $crlf = substr($buf, $p, 2);
                if ($crlf eq "\r\n") {
                    $p += 2;
                } elsif ($crlf =~ /^\n/) {
                    $p += 1;
                } elsif ($crlf ne "\r") {
                    return _incomplete($buf, %o, malformed => 1);
                } else {
                    return _incomplete($buf, %o);
                }
            }
            $end = $p;
        } elsif (defined $h{'content-length'} && $h{'content-length'} =~ /^\d+$/) {
            $end = $body_start + $h{'content-length'};
            return _incomplete($buf, %o) if length($buf) < $end;
            $r->{body} = substr($buf, $body_start, $h{'content-length'});
        } else {
            return _incomplete($buf, %o) unless $o{eof};
            $end = length $buf;
            $r->{body} = substr($buf, $body_start);
        }
        $r->{raw} = substr($buf, 0, $end);
        if (length $r->{body} && $r->{body} =~ /^\s*[\[{]/) {
            $r->{json} = eval { JSON::PP->new->utf8->decode($r->{body}) };
        }
        return wantarray ? ($r, $end) : $r;
    }
}

sub _incomplete {
    my ($buf, %o) = @_;
    return wantarray ? (undef, 0) : undef unless $o{eof} || $o{malformed};
    my $r = { status => undef, error => $o{malformed} ? 'malformed' : ($o{why} // 'eof'),
              raw => $buf, headers => {}, header_list => [], body => '' };
    return wantarray ? ($r, 0) : $r;
}

# ---- cleanup -----------------------------------------------------------

sub cleanup {
    my ($self) = @_;
    return if $self->{cleaned} || $$ != $self->{owner};
    $self->{cleaned} = 1;
    my $master = $self->{master};
    my @workers = $master && $self->alive($master) ? $self->processes_of($master) : ();
    my @pids = grep { $self->alive($_) } keys %{ $self->{pids} };
    kill 'TERM', @pids if @pids;
    $self->wait_for(sub { !grep { $self->alive($_) } @pids }, timeout => 5);
    my @left = grep { $self->alive($_) } @pids, @workers;
    if (@left) {
        Test::More::diag("killing processes that ignored TERM: @left");
        kill 'KILL', @left;
        $self->wait_for(sub { !grep { $self->alive($_) } @left }, timeout => 5);
    }
}

sub DESTROY {
    my ($self) = @_;
    local ($., $@, $!, $^E, $?);
    $self->cleanup;
    delete $LIVE{ refaddr $self };
}

# Processes are stopped as soon as a harness goes away (DESTROY, which
# also runs while a dying test unwinds); directories are removed only
# here, when the outcome of the whole test is known.
END {
    my $code = $?;
    if ($$ == $OWNER) {
        for my $t (grep { defined } values %LIVE) {
            local $?;
            $t->cleanup;
        }
        my $tb = Test::More->builder;
        my $plan = $tb->has_plan;
        my $ok = !$code && $tb->is_passing;
        $ok = 0 if defined $plan && $plan =~ /^\d+$/ && $plan != $tb->current_test;
        $ok = 0 if !defined $plan && $tb->current_test > 0;   # no done_testing
        for my $dir (@DIRS) {
            next unless -d $dir;
            if ($ENV{KS_KEEP} || !$ok) {
                Test::More::diag("test directory kept: $dir");
            } else {
                remove_tree($dir);
            }
        }
    }
    $? = $code;
}

# ---- backend objects ---------------------------------------------------

package Keystone::Test::Backend;

sub name { $_[0]{name} }
sub port { $_[0]{port} }
sub pid  { $_[0]{pid} }
sub addr { "127.0.0.1:$_[0]{port}" }

sub requests {
    my ($self) = @_;
    my @l = split /\n/, Keystone::Test::_slurp($self->{log});
    return @l;
}

sub stats {
    my ($self) = @_;
    my $r = $self->{t}->request($self->{port}, GET => '/__stats');
    return $r->{json};
}

sub set_health {
    my ($self, $code) = @_;
    my $r = $self->{t}->request($self->{port}, POST => '/__health', body => "$code");
    return ($r->{status} // 0) == 200;
}

sub stop {
    my ($self, %o) = @_;
    return $self->{t}->_terminate($self->{pid}, $o{timeout} // 10);
}

sub kill {
    my ($self, $sig) = @_;
    return CORE::kill($sig // 'TERM', $self->{pid});
}

sub wait {
    my ($self, %o) = @_;
    return $self->{t}->_wait_gone($self->{pid}, $o{timeout} // 5);
}

sub alive { $_[0]{t}->alive($_[0]{pid}) }

# ---- keep-alive connections ----------------------------------------------

package Keystone::Test::Conn;

sub sock { $_[0]{s} }

sub send {
    my ($self, $bytes, %o) = @_;
    return Keystone::Test::_send_all($self->{s}, $bytes, $o{timeout});
}

sub request {
    my ($self, $method, $path, %o) = @_;
    $self->send(Keystone::Test::build_request($method, $path, keepalive => 1, %o));
    return $self->response(timeout => $o{timeout}, head => $method eq 'HEAD');
}

sub response {
    my ($self, %o) = @_;
    my $deadline = Keystone::Test::_now() + ($o{timeout} // 5);
    my ($r, $used);
    my $done = sub {
        ($r, $used) = Keystone::Test::parse_response($self->{buf}, head => $o{head});
        return $r;
    };
    my $how = $self->{eof} ? ($done->() ? 'complete' : $self->{eof})
            : Keystone::Test::_read_until($self->{s}, \$self->{buf}, $deadline, $done);
    if ($how eq 'eof' || $how eq 'reset') {
        $self->{eof} = $how;
        ($r, $used) = Keystone::Test::parse_response($self->{buf}, head => $o{head},
                                                      eof => 1, why => $how);
        $used = length $self->{buf} if $r && !$used;
    } elsif ($how eq 'timeout') {
        $r = { status => undef, error => 'timeout', raw => $self->{buf},
               headers => {}, header_list => [], body => '' };
        $used = 0;
    }
    substr($self->{buf}, 0, $used) = '' if $used;
    return $r;
}

sub read_until {
    my ($self, $re, %o) = @_;
    my $end;
    my $match = sub {
        return 0 unless $self->{buf} =~ $re;
        $end = $+[0];
        return 1;
    };
    unless ($match->() || $self->{eof}) {
        my $how = Keystone::Test::_read_until($self->{s}, \$self->{buf},
                      Keystone::Test::_now() + ($o{timeout} // 5), $match);
        $self->{eof} = $how if $how eq 'eof' || $how eq 'reset';
    }
    return undef unless defined $end || $match->();
    my $got = substr($self->{buf}, 0, $end);
    substr($self->{buf}, 0, $end) = '';
    return $got;
}

sub read_bytes {
    my ($self, $n, %o) = @_;
    if (length $self->{buf} < $n && !$self->{eof}) {
        my $how = Keystone::Test::_read_until($self->{s}, \$self->{buf},
                      Keystone::Test::_now() + ($o{timeout} // 5),
                      sub { length $self->{buf} >= $n });
        $self->{eof} = $how if $how eq 'eof' || $how eq 'reset';
    }
    my $got = substr($self->{buf}, 0, $n);
    substr($self->{buf}, 0, length $got) = '';
    return $got;
}

sub read_raw {
    my ($self, %o) = @_;
    unless ($self->{eof}) {
        my $how = Keystone::Test::_read_until($self->{s}, \$self->{buf},
                                              Keystone::Test::_now() + ($o{timeout} // 1));
        $self->{eof} = $how unless $how eq 'timeout';
    }
    my $b = $self->{buf};
    $self->{buf} = '';
    return $b;
}

sub closed_by_peer {
    my ($self, %o) = @_;
    return 1 if $self->{eof};
    my $how = Keystone::Test::_read_until($self->{s}, \$self->{buf},
                                          Keystone::Test::_now() + ($o{timeout} // 1));
    return 0 if $how eq 'timeout';
    $self->{eof} = $how;
    return 1;
}

sub close {
    my ($self) = @_;
    CORE::close($self->{s}) if $self->{s};
    $self->{s} = undef;
}

sub DESTROY { $_[0]->close }

1;
