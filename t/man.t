#!/usr/bin/perl
# The manual pages: they render, lint clean, and describe what exists:
# every configuration key, every flag and command, every log message id.
use strict;
use warnings;
use Test::More;
use Keystone::Test;

my $t = Keystone::Test->new;
my $src = $t->srcdir;
my $mandoc = $t->bin('mandoc');

sub slurp { my ($f) = @_; open my $fh, '<', $f or die "$f: $!"; local $/; <$fh> }

my @pages = sort glob("$src/man/*.[578]");
ok(scalar(@pages) >= 4, 'the manual pages are there') or diag("@pages");
for my $page (@pages) {
    (my $name = $page) =~ s{.*/}{};
    my ($code, $out, $err) = $t->run([$mandoc, '-Tlint', '-Wwarning', $page]);
    is($code, 0, "$name lints clean") or diag("$out$err");
    ($code, $out) = $t->run([$mandoc, '-Tascii', $page]);
    $out =~ s/.\x08//g;    # overstrike bold and underline
    like($out, qr/^NAME\n.*^DESCRIPTION\n/ms, "$name renders with NAME and DESCRIPTION");
}
for my $want (qw(keystoned.8 keystonectl.8 keystone.yaml.5 keystone-lua.7)) {
    ok(-s "$src/man/$want", "man/$want exists");
}

# ---- every key of the configuration schema is described ---------------------------------
my $yaml5 = slurp("$src/man/keystone.yaml.5");
my %documented = map { $_ => 1 } $yaml5 =~ /\bIc (\w+)/g;
my $config_c = slurp("$src/master/config.c");
my %keys = map { $_ => 1 } ($config_c =~ /\bK_[A-Z]+\(\s*"([a-z_0-9]+)"/g,
                            $config_c =~ /\.name = "([a-z_0-9]+)"/g);
ok(scalar(keys %keys) > 50, 'found the key tables in master/config.c');
for my $k (sort keys %keys) {
    ok($documented{$k}, "keystone.yaml.5 describes key $k");
}

# ---- flags and commands ---------------------------------------------------------------------
my $k8 = slurp("$src/man/keystoned.8");
my (undef, undef, $usage) = $t->run([$t->bin('keystoned'), '-?']);
my ($flags) = $usage =~ /\[-(\w+)\]/;
ok($flags, 'keystoned prints its flags in the usage');
like($k8, qr/^\.It Fl $_\b/m, "keystoned.8 describes -$_") for split //, ($flags // '') . 'c';

my $ctl8 = slurp("$src/man/keystonectl.8");
(undef, undef, $usage) = $t->run([$t->bin('keystonectl')]);
my ($cmds) = $usage =~ /^commands: (.*)$/m;
ok($cmds, 'keystonectl lists its commands in the usage');
for my $cmd (map { (split ' ')[0] } split /,\s*/, $cmds // '') {
    like($ctl8, qr/^\.It Cm $cmd\b/m, "keystonectl.8 describes the command $cmd");
}

# ---- every error-log message id is explained in keystoned.8 --------------------------------
my %ids;
for my $f (map { glob("$src/$_/*.c") } qw(keystoned master worker shm lua)) {
    my $text = slurp($f);
    $ids{$1} = 1 while $text =~ /\bks_log_(?:error|warn|info|debug)\(\s*"([a-z0-9-]+)"/g;
}
ok(scalar(keys %ids) > 10, 'found the message ids in the source');
my ($logs) = $k8 =~ /^\.Sh LOGS\n(.*?)^\.Sh /ms;
my %explained = map { $_ => 1 } map { split /\s*,\s*/ } ($logs // '') =~ /^\.It Li (.+)$/mg;
ok($explained{$_}, "keystoned.8 LOGS explains message id $_") for sort keys %ids;

# ---- the service files --------------------------------------------------------------------
my ($code) = $t->run(['sh', '-n', "$src/etc/init.d/keystoned"]);
is($code, 0, 'etc/init.d/keystoned is valid sh');
ok(-x "$src/etc/init.d/keystoned", 'and executable');
my $unit = slurp("$src/etc/keystoned.service");
like($unit, qr/^ExecReload=.*keystonectl .*reload$/m, 'the systemd unit reloads through keystonectl');
like(slurp("$src/etc/logrotate.d/keystoned"), qr/kill -USR1/, 'logrotate reopens the logs with USR1');

done_testing;
