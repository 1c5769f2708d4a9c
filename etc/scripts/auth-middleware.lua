-- auth-middleware.lua: everything under /api needs a bearer token or an
-- API key.  The middleware answers 401 itself (it does not call next());
-- on success it tells the upstream who the caller is and drops the
-- credential, then next() runs the route: a Lua handler for /api/whoami,
-- the tenant's upstreams for the rest of /api.
--
-- The keys live in the script here; keystone.env() can read them from the
-- environment instead when lua.allowed_env lists the variable.

local keys = {
    ["demo-token"] = "alice",
    ["demo-api-key"] = "bob",
}

router:middleware("auth", function(req, res, next)
    local auth = req:header("authorization") or ""
    local token = auth:match("^[Bb]earer%s+(%S+)$") or req:header("x-api-key")
    local user = token and keys[token]
    if user == nil then
        res:status(401)
        res:header("WWW-Authenticate", 'Bearer realm="api"')
        res:json({error = "unauthorized", request_id = req:request_id()})
        return
    end
    req:set_header("X-User", user)
    req:del_header("Authorization")
    req:del_header("X-Api-Key")
    next()
end)

local api = router:create_group("/api", {middleware = {"auth"}})

api:add_route("GET", "/whoami", {
    handler = function(req, res)
        res:json({user = req:header("x-user"), tenant = req:tenant()})
    end,
})

-- any other method and path under /api: proxied, after the check
api:add_route("*", "/*")
