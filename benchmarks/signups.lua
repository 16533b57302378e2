-- wrk script: POST /signups with a unique email each time, counting the signups accepted (202).
--   wrk -s signups.lua http://127.0.0.1:8000/signups -- PREFIX
-- Emails are PREFIX-THREAD-N@example.com; `done` prints "accepted N" and "refused N".

local threads = {}

function setup(thread)
   thread:set("id", #threads + 1)
   table.insert(threads, thread)
end

function init(args)
   prefix = args[1] or "wrk"
   sent = 0
   accepted = 0
   refused = 0
end

function request()
   sent = sent + 1
   local body = string.format('{"email": "%s-%d-%d@example.com", "name": "Bench"}', prefix, id, sent)
   return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)
end

function response(status, headers, body)
   if status == 202 then
      accepted = accepted + 1
   else
      refused = refused + 1
   end
end

function done(summary, latency, requests)
   local total_accepted, total_refused = 0, 0
   for _, thread in ipairs(threads) do
      total_accepted = total_accepted + thread:get("accepted")
      total_refused = total_refused + thread:get("refused")
   end
   io.write(string.format("accepted %d\nrefused %d\n", total_accepted, total_refused))
end
