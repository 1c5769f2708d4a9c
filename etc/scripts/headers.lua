-- headers.lua: edit what goes up and what comes back.
--
-- A tenant-wide middleware stamps every request before it is routed; the
-- response hook sees every proxied response's head before the client does
-- and may change its status and headers (not its body).

router:use(function(req, res, next)
    req:set_header("X-Request-Start", string.format("%.3f", keystone.now()))
    -- headers a middleware sets on res before next() are added to the
    -- proxied response too
    res:header("X-Frame-Options", "DENY")
    next()
end)

router:on_response(function(req, res)
    res:header("X-Served-By", "keystoned")
    res:header("Strict-Transport-Security", "max-age=31536000")
    res:header("Server", nil)            -- nil removes the upstream's header
    if res:get_status() >= 500 then
        res:header("Cache-Control", "no-store")
    end
    if res:get_header("content-type") == nil then
        res:header("Content-Type", "application/octet-stream")
    end
end)
