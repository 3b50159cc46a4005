//! End-to-end tests of the HTTP API: a real server on a real socket, over a real sled data
//! dir and over a real PostgreSQL database.
//!
//! The suites listed in [`on_both_stores!`] below are written once, as plain `pub async fn`s
//! that start their server with `TestApp::spawn`, and run twice: in `sled::<module>::<test>`
//! on the embedded store and in `postgres::<module>::<test>` on a PostgreSQL server the
//! harness starts (one per test binary, a fresh database per test). Tests of the binary
//! itself (`crash`, parts of `activity`) run on sled; the cluster tests cover PostgreSQL
//! with real processes.

mod activity;
mod api_conventions;
mod audit;
mod auth_limits;
mod authz;
mod bad_input;
#[path = "../common/bin_server.rs"]
mod bin_server;
mod binary_ops;
mod crash;
mod data_dir;
mod forward_auth;
mod hardening;
mod helpers;
mod http_limits;
mod lifecycle;
#[path = "../common/postgres.rs"]
mod postgres_server;
mod schemas;
mod verify;

/// Runs each listed test once per store (see the crate documentation).
macro_rules! on_both_stores {
    ($($module:ident: [$($test:ident),* $(,)?]),* $(,)?) => {
        on_both_stores!(@store sled, Sled, $($module: [$($test),*]),*);
        on_both_stores!(@store postgres, Postgres, $($module: [$($test),*]),*);
    };
    (@store $store:ident, $backend:ident, $($module:ident: [$($test:ident),*]),*) => {
        mod $store {
            $(
                mod $module {
                    $(
                        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                        async fn $test() {
                            crate::helpers::BACKEND
                                .scope(
                                    crate::helpers::Backend::$backend,
                                    crate::$module::$test(),
                                )
                                .await
                        }
                    )*
                }
            )*
        }
    };
}

on_both_stores! {
    activity: [a_window_becomes_one_summary_per_credential],
    auth_limits: [a_flood_is_limited_and_other_clients_are_not, a_spoofed_forwarded_for_from_an_untrusted_peer_changes_nothing, well_behaved_clients_are_never_limited, the_lock_out_ends_and_zero_turns_the_limit_off],
    audit: [events_filters_and_paging_match_the_stored_log, events_refuse_bad_queries, key_history_and_principal_activity_match_what_was_appended, export_ranges_are_exact, merkle_proofs_verify_for_every_entry],
    authz: [every_route_times_every_credential],
    bad_input: [malformed_bodies_are_refused_as_json_and_write_nothing, oversized_regenerate_body_is_a_json_413, unknown_routes_methods_and_ids_are_json_404_and_405, invalid_values_are_422_with_their_code, bad_if_match_and_query_are_400, secrets_in_the_wrong_place_are_never_echoed, the_valid_edges_are_accepted, array_bodies_are_refused, malformed_authorization_headers_are_401],
    forward_auth: [every_family_decides_as_verify_does, allowed_answers_name_the_credential_and_refusals_say_why, the_api_key_header_is_read_first_when_configured, forward_auth_counts_activity_as_verify_does],
    lifecycle: [api_key_lifecycle_end_to_end, users_and_tokens_lifecycle_end_to_end],
    schemas: [real_answers_and_entries_match_the_schemas],
    verify: [valid_key_answers_valid_with_its_principal, malformed_secrets_answer_malformed, well_formed_unknown_secrets_answer_not_found, disabled_key_answers_disabled_and_enabled_again_valid, expired_key_answers_expired, expired_pat_answers_expired, deleted_key_answers_revoked, regenerated_without_grace_revokes_the_old_secret_at_once, regenerated_old_secret_works_in_grace_then_is_revoked, revoked_pat_and_pat_of_deactivated_user_answer_revoked, default_policy_answers_the_seed_cases, host_rewrite_tricks_answer_forbidden, auditor_user_may_call_nothing_on_the_host, custom_policy_changes_the_answers, verify_is_always_200_with_a_code],
}
