#include "scopegate/salesforce.h"

#include <string.h>

/* clang-format off */
const char *const sg_salesforce_scopes[] = {
    "openid", "id", "profile", "email", "address", "phone", "api", "web", "full",
    "refresh_token", "offline_access", "visualforce", "chatter_api", "custom_permissions",
    "content", "lightning", "wave_api", "eclair_api", "pardot_api", "interaction_api",
    "chatbot_api", "cdp_profile_api", "cdp_query_api", "cdp_ingest_api", "cdp_segment_api",
    "cdp_identityresolution_api", "cdp_calculated_insight_api", "cdp_api", "einstein_gpt_api",
    "sfap_api", "mcp_api", "user_registration_api", "pwdless_login_api", "forgot_password",
    "data_cloud_user_claims", NULL,
};

const char *const sg_salesforce_claims[] = {
    "active", "address", "email", "email_verified", "family_name", "given_name",
    "is_app_installed", "language", "locale", "name", "nickname", "organization_id",
    "phone_number", "phone_number_verified", "photos", "picture", "preferred_username",
    "profile", "sub", "updated_at", "urls", "user_id", "user_type", "zoneinfo", NULL,
};
/* clang-format on */

int sg_salesforce_scope_known(const char *scope)
{
    for (size_t i = 0; scope && sg_salesforce_scopes[i]; i++)
        if (strcmp(sg_salesforce_scopes[i], scope) == 0)
            return 1;
    return 0;
}
