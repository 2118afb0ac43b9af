#!/usr/bin/env bash
# Mutation study of the lifecycle rules (issue 8, item 3: "remove each rule in turn and show a
# property fails").
#
# NOT RUN IN CI: every mutation rebuilds the crate and runs the lifecycle tests with thousands of
# hostile cases; the whole study takes an hour or more on two cores.
#
# For each protection (a rule of src/lifecycle/evidence.rs or planner.rs, the write order and
# confirm_retired of converge.rs, the render cap and the Unwritten reuse of objects.rs) it applies
# the smallest patch that removes exactly that rule, runs `cargo test --test lifecycle`, records
# which tests fail (property tests apart from rule tests) with the first line of each failure,
# and restores the tree (also on Ctrl-C). A patch that no longer applies is reported as such.
#
# Usage:  tests/lifecycle/mutations.sh [--list | --check] [NAME...]   (no NAME: every mutation)
#         --check applies each patch and restores it, building and running nothing.
# Env:    PROPTEST_CASES   cases per property test (default 3000)
#         ESCALATE_CASES   when no property fails, run again with this many (default 10000;
#                          empty: never)
#         LOG_DIR          where the logs and results.tsv go (default /tmp/jwt-mutations)
#
# Results: $LOG_DIR/results.tsv, one line per mutation:
#   name <TAB> verdict <TAB> failing property tests <TAB> failing rule tests <TAB> messages
# verdict: PROPERTY (a property test fails), RULE-ONLY (only unit rule tests fail), SURVIVED
# (nothing fails), BUILD (the mutant does not build), STALE (the patch no longer applies).
set -uo pipefail

root=$(git rev-parse --show-toplevel) || exit 2
cd "$root" || exit 2
cases=${PROPTEST_CASES:-3000}
escalate=${ESCALATE_CASES-10000}
logs=${LOG_DIR:-/tmp/jwt-mutations}
mkdir -p "$logs"

# name | file | text to find (exactly once) | replacement
# Fields are separated by ' | '; '\n' in a field is a newline.
MUTATIONS=$(
	cat <<'EOF'
ev-1-thumbprint | src/lifecycle/evidence.rs | fn jwk_is_sound(jwk: &PublicJwk) -> bool {\n | fn jwk_is_sound(jwk: &PublicJwk) -> bool {\n    return true;\n
ev-2-unrecorded-never-published | src/lifecycle/evidence.rs | let proven = records_lost && self.published.contains_key(*kid); | let proven = true;
ev-2-recover-material-and-jwk | src/lifecycle/evidence.rs | let proven = records_lost && self.published.contains_key(*kid); | let proven = false;
ev-2-recover-only-when-records-lost | src/lifecycle/evidence.rs | let records_lost = self.evidence.memory.is_empty() || self.manifest.is_none(); | let records_lost = true;
ev-3-merge-furthest | src/lifecycle/evidence.rs | Some(earlier) => merge(earlier, record), | Some(_earlier) => record,
ev-3b-forgotten-stay-retired | src/lifecycle/evidence.rs | fn forgotten_stay_retired(&mut self) {\n | fn forgotten_stay_retired(&mut self) {\n        return;\n
ev-3c-request-honoured-once | src/lifecycle/evidence.rs | let remembered = self.evidence.remembered_rotation_request.clone(); | let remembered: Option<String> = None;
ev-3c-forced-rotation-served | src/lifecycle/evidence.rs | .filter(|t| active_since.is_none_or(|a| a < *t)); | .filter(|t| true || active_since.is_none_or(|a| a < *t));
ev-3-unpublished-waits-longest | src/lifecycle/evidence.rs | let unpublished = state == KeyState::Pending && b.published_at.is_none(); | let unpublished = false;
ev-2-recovered-longest-retention | src/lifecycle/evidence.rs | longest_retention: Some(longest_valid_retention(policy)), | longest_retention: None,
ev-2b-retired-counts-from-now | src/lifecycle/evidence.rs | KeyState::Retired => {\n                    self.retire_on_write.insert(r.kid.clone());\n                } | KeyState::Retired => {}
ev-2b-status-lost-trust-no-time | src/lifecycle/evidence.rs | fn status_lost_trust_no_time(&mut self, policy: &Policy) {\n | fn status_lost_trust_no_time(&mut self, policy: &Policy) {\n        return;\n
ev-2b-own-manifest-trusted | src/lifecycle/evidence.rs | if !self.evidence.memory.is_empty() || self.evidence.own_manifest { | if !self.evidence.memory.is_empty() {
ev-4-clamp-future | src/lifecycle/evidence.rs | Some(at) if *at > add(now, FUTURE_TOLERANCE) => { | Some(at) if false && *at > add(now, FUTURE_TOLERANCE) => {
ev-4-times-fit-state | src/lifecycle/evidence.rs | fn fit_times_to_state(r: &mut KeyRecord, now: Timestamp) {\n | fn fit_times_to_state(r: &mut KeyRecord, now: Timestamp) {\n    return;\n
ev-3b-stored-kids-not-forgotten | src/lifecycle/evidence.rs | && !stored.contains_key(&r.kid) | && true
ev-2-stored-kid-recovered | src/lifecycle/evidence.rs | if proven || self.evidence.stored.states.contains_key(*kid) { | if proven {
ev-3-stored-state-stands | src/lifecycle/evidence.rs | && *state > r.state | && false && *state > r.state
ev-3-stored-expiry-stands | src/lifecycle/evidence.rs | fn stored_expiries_stand(&mut self) {\n | fn stored_expiries_stand(&mut self) {\n        return;\n
ev-5-stored-publication-waits | src/lifecycle/evidence.rs | record.published_at = record.published_at.max(stored); | let _ = stored;
ev-5-unseen-unpublished | src/lifecycle/evidence.rs | if !seen {\n                    record.published_at = None;\n                } else if forgotten { | if forgotten {
ev-5b-forgotten-pending-waits | src/lifecycle/evidence.rs | } else if forgotten { | } else if false && forgotten {
ev-6-signers-retire-on-write | src/lifecycle/evidence.rs | .is_some_and(|r| r.state == KeyState::Retired) | .is_some_and(|r| false && r.state == KeyState::Retired)
ev-6-stored-active-retires-on-write | src/lifecycle/evidence.rs | .chain(stored_active) | .chain(stored_active.filter(|_| false))
ev-6-status-active-retires-on-write | src/lifecycle/evidence.rs | .chain(remembered_active) | .chain(remembered_active.filter(|_| false))
ev-7-one-active | src/lifecycle/evidence.rs | fn one_active(&mut self, policy: &Policy) {\n | fn one_active(&mut self, policy: &Policy) {\n        return;\n
ev-7b-pending-in-slot | src/lifecycle/evidence.rs | r.state != KeyState::Active\n                    && self.signing.contains | r.state == KeyState::Retired\n                    && self.signing.contains
ev-7b-signing-key-signs-on | src/lifecycle/evidence.rs | fn signing_key_signs_on(&mut self, policy: &Policy) {\n | fn signing_key_signs_on(&mut self, policy: &Policy) {\n        return;\n
ev-7b-stored-active-slot-key | src/lifecycle/evidence.rs | || stored_active(&r.kid) | || (false && stored_active(&r.kid))
ev-7b-revoked-active-cannot-sign | src/lifecycle/evidence.rs | self.found.contains_key(r.kid.as_str()) && !policy.revoked_kids.contains(&r.kid) | self.found.contains_key(r.kid.as_str())
ev-7b-status-active-with-material | src/lifecycle/evidence.rs | fn status_active_with_material(&self, policy: &Policy) -> Option<String> {\n | fn status_active_with_material(&self, policy: &Policy) -> Option<String> {\n        return None;\n
ev-7b-slot-key-still-published | src/lifecycle/evidence.rs | .or_else(|| self.slot_key_still_published(policy)) | .or_else(|| None)
ev-7c-unconfirmed-activation-steps-back | src/lifecycle/evidence.rs | fn unconfirmed_activation_steps_back(&mut self, policy: &Policy) {\n | fn unconfirmed_activation_steps_back(&mut self, policy: &Policy) {\n        return;\n
ev-8-drop-unpublishable | src/lifecycle/evidence.rs | fn drop_unpublishable(&mut self) {\n | fn drop_unpublishable(&mut self) {\n        return;\n
ev-9-newer-manifest-blocks | src/lifecycle/evidence.rs | ManifestRead::Newer(version) => Err(Blocked::NewerManifest(*version)), | ManifestRead::Newer(_) => Ok(None),
ev-unconfirmed-retirement | src/lifecycle/evidence.rs | fn unconfirmed_retirements_count_from_now(&mut self) {\n | fn unconfirmed_retirements_count_from_now(&mut self) {\n        return;\n
policy-cache-horizon-counts-http-max-age | src/lifecycle/policy.rs | let shared = if self.served_over_http { | let shared = if false && self.served_over_http {
pl-revoke | src/lifecycle/planner.rs | fn revoke(&mut self) {\n | fn revoke(&mut self) {\n        return;\n
pl-lose-vanished | src/lifecycle/planner.rs | fn lose_vanished(&mut self, observed: &Observed) {\n | fn lose_vanished(&mut self, observed: &Observed) {\n        return;\n
pl-stamp-published | src/lifecycle/planner.rs | fn stamp_published(&mut self, observed: &Observed) {\n | fn stamp_published(&mut self, observed: &Observed) {\n        return;\n
pl-expire | src/lifecycle/planner.rs | fn expire(&mut self) {\n | fn expire(&mut self) {\n        return;\n
pl-discard-stale-pending | src/lifecycle/planner.rs | fn discard_stale_pending(&mut self) {\n | fn discard_stale_pending(&mut self) {\n        return;\n
pl-honour-rotation-request | src/lifecycle/planner.rs | fn honour_rotation_request(&mut self) {\n | fn honour_rotation_request(&mut self) {\n        return;\n
pl-activate-at-once | src/lifecycle/planner.rs | ) -> Result<(), E> {\n        let why = | ) -> Result<(), E> {\n        return Ok(());\n        let why =
pl-rotate-when-due | src/lifecycle/planner.rs | ) -> Result<(), E> {\n        let (policy, now) = | ) -> Result<(), E> {\n        return Ok(());\n        let (policy, now) =
pl-track-longest-retention | src/lifecycle/planner.rs | fn track_longest_retention(&mut self) {\n | fn track_longest_retention(&mut self) {\n        return;\n
pl-max-keys-hold | src/lifecycle/planner.rs | if self.keys.len() < MAX_KEYS { | if true {
cv-publish-first | src/lifecycle/converge.rs | if !signed_unpublished { | if true {
cv-store-first | src/lifecycle/converge.rs | if !signed_unpublished { | if false {
cv-unpublished-pending-waits | src/lifecycle/converge.rs | k.state == KeyState::Pending && !observed.published.contains(&k.kid) | k.state == KeyState::Pending && false
cv-confirm-retired | src/lifecycle/converge.rs | let confirmed = plan\n            .manifest\n            .confirm_retired(&retire_on_write, written_at, policy); | let confirmed = false;\n        let _ = written_at;
ob-render-cap | src/objects.rs | if bytes > MAX_RENDERED_BYTES { | if false && bytes > MAX_RENDERED_BYTES {
ob-unwritten-reuse | src/objects.rs | .filter(|k| k.alg() == alg && (!alg.is_rsa() || k.rsa_size() == size)) | .filter(|k| false && k.alg() == alg && (!alg.is_rsa() || k.rsa_size() == size))
EOF
)

if [ "${1-}" = --list ]; then
	cut -d'|' -f1 <<<"$MUTATIONS" | tr -d ' '
	exit 0
fi

check=0
if [ "${1-}" = --check ]; then
	check=1
	shift
fi

if ! git diff --quiet -- src tests/proptest-regressions; then
	echo "src/ or tests/proptest-regressions has uncommitted changes; commit or stash them first" >&2
	exit 2
fi
# Failing cases a mutant leaves in the regression files are the mutant's, not the project's.
restore() { git checkout -q -- src tests/proptest-regressions; }
trap restore EXIT
trap 'restore; exit 130' INT TERM

# Replaces the one occurrence of $3 in $2 by $4; fails when it is not there exactly once.
apply() {
	python3 - "$@" <<'PY'
import sys
_, file, old, new = sys.argv
old, new = old.replace("\\n", "\n"), new.replace("\\n", "\n")
text = open(file).read()
if text.count(old) != 1:
    sys.exit(f"{file}: expected the text once, found it {text.count(old)} times")
open(file, "w").write(text.replace(old, new))
PY
}

# Runs the lifecycle tests with $1 cases into $2; prints "props<TAB>rules<TAB>messages".
run_tests() {
	local n=$1 log=$2
	PROPTEST_CASES=$n PROPTEST_MAX_SHRINK_ITERS=0 \
		cargo test --test lifecycle --no-fail-fast >"$log" 2>&1
	local failed props rules msgs
	failed=$(sed -n 's/^test \([a-z_:]*\) \.\.\. FAILED$/\1/p' "$log" | sort -u)
	props=$(grep -E '^(hostile|properties)::' <<<"$failed" | paste -sd, -)
	rules=$(grep -vE '^(hostile|properties)::' <<<"$failed" | grep . | paste -sd, -)
	# First line of each failure: a proptest's "Test failed: ...", or a panic's message.
	msgs=$(awk '
		/^---- .* stdout ----$/ { name = $2; want = 1; next }
		want && /panicked at/ { panicked = 1; next }
		want && panicked {
			sub(/^Test failed: (Case failed: )?/, ""); sub(/; minimal failing input.*/, "")
			print name ": " substr($0, 1, 200); want = 0; panicked = 0
		}
	' "$log" | paste -sd'|' -)
	printf '%s\t%s\t%s\n' "$props" "$rules" "$msgs"
}

results=$logs/results.tsv
: >"$results"
while IFS= read -r line; do
	[ -n "$line" ] || continue
	name=$(awk -F' [|] ' '{print $1}' <<<"$line")
	file=$(awk -F' [|] ' '{print $2}' <<<"$line")
	old=$(awk -F' [|] ' '{print $3}' <<<"$line")
	new=$(awk -F' [|] ' '{print $4}' <<<"$line")
	if [ $# -gt 0 ] && ! printf '%s\n' "$@" | grep -qx "$name"; then
		continue
	fi
	restore
	echo "== $name ($file)"
	if [ "$check" = 1 ]; then
		apply "$file" "$old" "$new" && echo "   applies"
		continue
	fi
	if ! apply "$file" "$old" "$new"; then
		printf '%s\tSTALE\t\t\tthe patch no longer applies\n' "$name" | tee -a "$results"
		continue
	fi
	if ! cargo test --test lifecycle --no-run >"$logs/$name.build.log" 2>&1; then
		printf '%s\tBUILD\t\t\tsee %s\n' "$name" "$logs/$name.build.log" | tee -a "$results"
		continue
	fi
	outcome=$(run_tests "$cases" "$logs/$name.log")
	props=$(cut -f1 <<<"$outcome")
	if [ -z "$props" ] && [ -n "$escalate" ]; then
		echo "   no property failed with $cases cases; again with $escalate"
		outcome=$(run_tests "$escalate" "$logs/$name.$escalate.log")
		props=$(cut -f1 <<<"$outcome")
	fi
	rules=$(cut -f2 <<<"$outcome")
	if [ -n "$props" ]; then
		verdict=PROPERTY
	elif [ -n "$rules" ]; then
		verdict=RULE-ONLY
	else
		verdict=SURVIVED
	fi
	printf '%s\t%s\t%s\n' "$name" "$verdict" "$outcome" | tee -a "$results"
done <<<"$MUTATIONS"
restore
echo "results: $results"
