counter = 0
request = function()
  counter = counter + 1
  return wrk.format("PUT", "/v1/kv/b" .. (counter % 10000), nil, string.rep("v", 100))
end
