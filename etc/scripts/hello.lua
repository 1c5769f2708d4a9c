-- hello.lua: the smallest useful script.  GET /hello is answered by Lua;
-- every other request goes on to the tenant's upstreams as usual.
router:add_route("GET", "/hello", {
    handler = function(req, res)
        res:write("Hello World")
    end,
})
