#!/usr/bin/perl
# SpamAssassin Bayes, driven line by line from replay.py.
#
# Why a helper instead of `spamassassin` + `sa-learn` per message: both load
# the whole rule set at start-up (~1-2 s of Perl), which would make a
# 6,000-message replay take hours.  This keeps one Mail::SpamAssassin object
# alive and calls the same API those tools call ($sa->check for scoring,
# $sa->learn as sa-learn does), against a private --dbpath-style bayes_path.
#
# Usage: sa_bayes.pl WORKDIR      (WORKDIR: empty temp dir, becomes the DB home)
# stdin commands, one per line, one answer line each on stdout:
#   check PATH          -> "<prob>" (Bayes spam probability, or "none" when
#                          Bayes did not score: fewer than bayes_min_spam_num /
#                          bayes_min_ham_num learned, stock 200/200)
#   learn spam|ham PATH -> "ok" or "skipped"
use strict;
use warnings;
use File::Spec;
use Mail::SpamAssassin;

my $work = shift or die "usage: $0 WORKDIR\n";
my $stock = '/usr/share/spamassassin';

# Rules: only the stock files that define or tune Bayes.  Loading the full
# rule set would run hundreds of non-Bayes tests per message for nothing
# (and we want the Bayes score alone, as the peer comparison asks).
my $rules = "$work/rules";
mkdir $rules;
# 20_aux_tlds.cf: the TLD list SpamAssassin needs to parse domains (URIs and
# relays feed Bayes tokens).
for my $f (qw(10_default_prefs.cf 20_aux_tlds.cf 23_bayes.cf 60_bayes_stopwords.cf)) {
    symlink("$stock/$f", "$rules/$f") or die "symlink $f: $!";
}
my $site = "$work/site";
mkdir $site;
open my $pre, '>', "$site/bayes.pre" or die;
print $pre "loadplugin Mail::SpamAssassin::Plugin::Check\n";  # runs the rules at all
print $pre "loadplugin Mail::SpamAssassin::Plugin::Bayes\n";
close $pre;
open my $local, '>', "$site/local.cf" or die;
print $local <<"EOF";
# Deviations from a stock install, each needed for a fair replay:
#  - training comes only from the replay's gold-label feedback; stock
#    auto-learn would self-train from the (Bayes-only, hence ~0) score;
use_bayes 1
bayes_auto_learn 0
#  - the database lives in the replay's temp dir (sa-learn --dbpath);
bayes_path $work/db/bayes
#  - no network tests (none are loaded anyway).
skip_rbl_checks 1
EOF
close $local;
mkdir "$work/db";

my $sa = Mail::SpamAssassin->new({
    rules_filename      => $rules,
    site_rules_filename => $site,
    userprefs_filename  => File::Spec->devnull,
    dont_copy_prefs     => 1,
    local_tests_only    => 1,
    home_dir_for_helpers => $work,
    post_config_text    => '',
});
$sa->init(1);
# sa-learn does the same: the learner is initialised once, caches are
# rebuilt at the end.  Default (DBM) store, default auto-expiry.
$sa->init_learner({});

$| = 1;
sub slurp {
    my ($p) = @_;
    open my $fh, '<:raw', $p or die "open $p: $!";
    local $/;
    my $t = <$fh>;
    return $t;
}

while (my $line = <STDIN>) {
    chomp $line;
    if ($line =~ /^check (.+)$/) {
        my $mail = $sa->parse(slurp($1));
        my $pms = $sa->check($mail);
        my $p = $pms->{bayes_score};
        print defined $p ? sprintf("%.17g\n", $p) : "none\n";
        $pms->finish;
        $mail->finish;
    } elsif ($line =~ /^learn (spam|ham) (.+)$/) {
        my $mail = $sa->parse(slurp($2));
        my $st = $sa->learn($mail, undef, $1 eq 'spam', 0);
        print $st->did_learn ? "ok\n" : "skipped\n";
        $st->finish;
        $mail->finish;
    } else {
        die "bad command: $line\n";
    }
}
$sa->finish_learner;
