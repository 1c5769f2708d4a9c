#!/usr/bin/perl
# The fuzz harnesses' corpora replayed (t/fuzz/README.md): every file of
# t/fuzz/corpus/NAME (seeds and every crash the fuzzers found) through
# t/fuzz/replay_NAME, the harness with a plain main, whose properties
# abort on a violation; the request harnesses also take t/corpus.
use strict;
use warnings;
use File::Basename qw(dirname);
use Test::More;
use Keystone::Test;

my $t = Keystone::Test->new;
my $src = $t->srcdir;
my $bindir = dirname($t->bin('backend')) . '/fuzz';
my %extra = (http => ["$src/t/corpus"], body => ["$src/t/corpus"], lua => ["$src/t/corpus"]);

for my $name (qw(http body config router lua)) {
    my $dir = "$src/t/fuzz/corpus/$name";
    opendir(my $dh, $dir) or die "$dir: $!";
    my $files = grep { -f "$dir/$_" } readdir $dh;
    closedir $dh;
    cmp_ok($files, '>', 0, "$name: a seed corpus");
    my ($code, $out, $err) = $t->run([ "$bindir/replay_$name", $dir, @{ $extra{$name} // [] } ],
                                     timeout => 120);
    if ($code == 77) {
        # fuzz_isolate_network(): no network namespace to be had here
        diag("$name: $err");
      SKIP: { skip("replay_$name cannot leave the network here", 1) }
        next;
    }
    my ($runs) = $out =~ /^replay: (\d+) inputs$/m;
    ok($code == 0 && defined $runs && $runs >= $files, "$name: $files corpus files replayed, every property holds")
        or diag("exit $code\n$out\n$err");
}

done_testing;
