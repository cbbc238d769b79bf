/* profile_db.h — engine profiles (sim/profile.h) in the run store, and this machine's identity.
 *
 * A profile is stored in the store's calibration table under (profile = its name, op =
 * CLI_PROFILE_OP) as sim_profile_to_json text; saving again replaces it. The machine identity (host
 * name and CPU model) is what sim_profile_check compares, so a profile measured elsewhere is
 * refused.
 */
#ifndef SLUICE_CLI_PROFILE_DB_H
#define SLUICE_CLI_PROFILE_DB_H

#include <stdbool.h>
#include <stddef.h>

#include "include/sluice.h"
#include "sim/profile.h"
#include "sim/sim.h"

#define CLI_PROFILE_OP "engine_profile"

/* Host name (gethostname) and CPU model (/proc/cpuinfo "model name", else "unknown"). Cannot fail. */
void cli_machine_id(char *host, size_t hostlen, char *cpu, size_t cpulen);

/* The name `sluice profile` gives when -o is not given: "STEM-BACKEND-tTHREADS", with "-kvf16" or
 * "-kvint8" after it for a profile of the KV cache in F16 or int8 (STEM: the model file's name
 * without .gguf). Cannot fail (truncates). */
void cli_profile_default_name(const char *model, const char *backend, int threads, sluice_kv_dtype kv, char *out,
                              size_t n);

/* SL_OK when p was measured with the KV cache element type this run uses (kv on the cpu backend,
 * F16 on others: the profile's model.bytes_per_kv is eng_kv_elem_bytes of it); SL_EINVAL with
 * "profile 'NAME' is stale: measured with --kv-dtype f16, ..." in err otherwise. */
int cli_profile_check_kv(const sim_profile_t *p, const char *backend, sluice_kv_dtype kv, char *err, size_t errlen);

/* Saves p under p->name in the store at db. SL_EDB (and others) with the reason in err. */
int cli_profile_save(const char *db, const sim_profile_t *p, char *err, size_t errlen);

/* Loads the profile called name from db. SL_ENOTFOUND when db has none of that name (err says so,
 * and how to make one), SL_EFORMAT when the stored text is bad, SL_EDB. */
int cli_profile_load(const char *db, const char *name, sim_profile_t *p, char *err, size_t errlen);

/* Points cfg at p (`sluice sim --gpu NAME` naming an engine profile): steps priced by p, the
 * model is p's (cfg->model and cfg->sched.model), max_sequence_length at most the engine's, the
 * KV pool sized as the engine sizes it (plan_kv), hw only names the run. p must outlive the
 * simulator's creation. Cannot fail. */
void cli_profile_sim_config(const sim_profile_t *p, sim_config_t *cfg);

#endif
